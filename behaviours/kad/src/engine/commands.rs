//! The application's commands (each starts a query) and the driver every query shares:
//! contacting the peers its lookup picks, feeding it responses and failures, moving it to
//! its next phase, and reporting its end. What differs by kind lives in `queries`.

use std::time::Instant;

use meshwire_core::PeerId;

use super::queries::{
    AddProvider, AfterLookup, Ctx, FindNode, GetProviders, GetValue, Outcome, PutValue, QueryState,
};
use super::requests::RequestKind;
use super::{KadEngine, KadEvent};
use crate::kbucket::Key;
use crate::protocol::{KadPeer, KadResponse, Record, RecordKey};
use crate::query::{
    ClosestPeersIter, IterStep, PeerRecord, QueryError, QueryId, QueryOrigin, QueryStats,
};
use crate::store::StoreError;

impl KadEngine {
    /// Looks up the `k` peers closest to `key` (any bytes; usually a peer id).
    pub fn find_node(&mut self, key: Vec<u8>, now: Instant) -> QueryId {
        let iter = self.lookup(&Key::from_bytes(&key));
        let state = QueryState::FindNode(FindNode { key, iter });
        let id = self.new_query(QueryOrigin::User, None, state, now);
        self.drive(now);
        id
    }

    /// Looks up the record under `key`, stopping once `quorum` (at least 1) records were
    /// received. A record in the local store counts as one.
    pub fn get_value(&mut self, key: RecordKey, quorum: usize, now: Instant) -> QueryId {
        let local = self.records.get_stored(&key, now).map(|r| PeerRecord {
            peer: None,
            record: r.to_record(now),
        });
        let iter = self.lookup(&Key::from_bytes(key.as_bytes()));
        let query = GetValue::new(key, quorum, iter, local);
        let done = query.satisfied();
        let id = self.new_query(QueryOrigin::User, None, QueryState::GetValue(query), now);
        if done {
            self.end_query(id, Ending::Done, now);
        }
        self.drive(now);
        id
    }

    /// Stores `record` locally (as originated: it is republished periodically), then at the `k`
    /// peers closest to its key. Succeeds when at least `quorum` of them confirm. A record
    /// without publisher is published as the local peer's; one without TTL gets the configured
    /// record TTL, so remote copies expire with the local one.
    ///
    /// # Errors
    ///
    /// The local store refused the record: [`StoreError::ValueTooLarge`],
    /// [`StoreError::MaxRecords`], or [`StoreError::RecordTooLarge`] when no message of
    /// [`KadConfig::max_message_size`](super::KadConfig::max_message_size) could carry it (it
    /// could be neither sent nor served).
    pub fn put_value(
        &mut self,
        mut record: Record,
        quorum: usize,
        now: Instant,
    ) -> Result<QueryId, StoreError> {
        record.publisher = record.publisher.or(Some(self.local));
        record.ttl = Some(record.ttl.map_or(self.config.store.record_ttl, |t| {
            t.min(self.config.store.record_ttl)
        }));
        self.check_record(&record)?;
        self.records.put(record.clone(), true, now)?;
        let id = self.start_put(record, quorum, QueryOrigin::User, now);
        self.drive(now);
        Ok(id)
    }

    pub(super) fn start_put(
        &mut self,
        record: Record,
        quorum: usize,
        origin: QueryOrigin,
        now: Instant,
    ) -> QueryId {
        let iter = self.lookup(&Key::from_bytes(record.key.as_bytes()));
        let state = QueryState::PutValue(PutValue::new(record, quorum, iter));
        self.new_query(origin, None, state, now)
    }

    /// Announces the local node as a provider of `key`: stores it locally (re-announced
    /// periodically), then sends ADD_PROVIDER to the `k` peers closest to `key`.
    ///
    /// # Errors
    ///
    /// The local provider store refused it.
    pub fn start_providing(&mut self, key: RecordKey, now: Instant) -> Result<QueryId, StoreError> {
        let me = KadPeer::new(self.local, self.external_addrs.clone());
        self.providers.add(key.clone(), me, now)?;
        self.providers.start_providing(key.clone(), now);
        let id = self.start_add_provider(key, QueryOrigin::User, now);
        self.drive(now);
        Ok(id)
    }

    pub(super) fn start_add_provider(
        &mut self,
        key: RecordKey,
        origin: QueryOrigin,
        now: Instant,
    ) -> QueryId {
        let iter = self.lookup(&Key::from_bytes(key.as_bytes()));
        let state = QueryState::AddProvider(AddProvider { key, iter });
        self.new_query(origin, None, state, now)
    }

    /// Stops announcing `key` (remote announcements expire by themselves).
    pub fn stop_providing(&mut self, key: &RecordKey) {
        self.providers.stop_providing(key);
    }

    /// Looks up the providers of `key`; stops early once `limit` providers are known.
    pub fn get_providers(&mut self, key: RecordKey, limit: Option<usize>, now: Instant) -> QueryId {
        let providers: Vec<KadPeer> = self
            .providers
            .get(&key, now)
            .into_iter()
            .map(|p| KadPeer::new(p.provider, p.addrs.clone()))
            .collect();
        let iter = self.lookup(&Key::from_bytes(key.as_bytes()));
        let query = GetProviders::new(key, limit, iter, providers);
        let done = query.satisfied();
        let id = self.new_query(
            QueryOrigin::User,
            None,
            QueryState::GetProviders(query),
            now,
        );
        if done {
            self.end_query(id, Ending::Done, now);
        }
        self.drive(now);
        id
    }

    /// Stops query `id` now; it finishes with what it has (a [`KadEvent::QueryFinished`] is
    /// emitted). Returns `false` for an unknown id.
    pub fn finish(&mut self, id: QueryId, now: Instant) -> bool {
        if !self.queries.contains(&id) {
            return false;
        }
        self.end_query(id, Ending::Done, now);
        self.drive(now);
        true
    }

    // ----- the query driver --------------------------------------------------------------

    pub(super) fn new_query(
        &mut self,
        origin: QueryOrigin,
        parent: Option<QueryId>,
        state: QueryState,
        now: Instant,
    ) -> QueryId {
        let deadline = now + self.config.query_timeout;
        self.queries.insert(origin, parent, state, now, deadline)
    }

    /// A lookup of `target` seeded with the routing table's closest peers.
    pub(super) fn lookup(&self, target: &Key) -> ClosestPeersIter {
        let seeds = self
            .table
            .closest(target, self.config.k)
            .map(|n| (n.peer, n.addrs.clone()));
        ClosestPeersIter::new(*target, self.config.k, self.config.alpha, seeds)
            .with_retries(self.config.lookup_retries)
    }

    /// A response to a request of query `id`.
    pub(super) fn query_response(
        &mut self,
        id: QueryId,
        from: PeerId,
        response: KadResponse,
        now: Instant,
    ) {
        let local = self.local;
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let kind = q.state.kind();
        let message_type = response.message_type();
        let handled = kind.on_response(from, response, &local).unwrap_or_else(|| {
            tracing::debug!(%from, response = ?message_type, "unexpected response type");
            if let Some(iter) = kind.iter_mut() {
                iter.on_failure(&from);
            }
            Default::default()
        });
        if handled.ok {
            q.stats.successes += 1;
        } else {
            q.stats.failures += 1;
        }
        if let Some(progress) = handled.progress {
            self.events
                .push_back(KadEvent::QueryProgress { id, progress });
        }
        if handled.finish {
            self.end_query(id, Ending::Done, now);
        } else {
            self.queries.mark_dirty(id);
        }
    }

    /// A request of query `id` to `peer` failed or timed out.
    pub(super) fn query_failure(&mut self, id: QueryId, peer: &PeerId, timed_out: bool) {
        if let Some(q) = self.queries.get_mut(&id) {
            q.stats.failures += 1;
            if q.state.kind().on_failure(peer, timed_out) {
                self.queries.mark_dirty(id);
            }
        }
    }

    /// Sends the requests query `id`'s lookup wants; moves it on when the lookup ends.
    pub(super) fn drive_query(&mut self, id: QueryId, now: Instant) {
        let local = self.local;
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let kind = q.state.kind();
        if kind.is_done() {
            self.end_query(id, Ending::Done, now);
            return;
        }
        let Some(request) = kind.lookup_request(&local) else {
            return;
        };
        let mut contacts = Vec::new();
        let mut finished = false;
        if let Some(iter) = kind.iter_mut() {
            loop {
                match iter.next_step() {
                    IterStep::Contact { peer, addrs } => contacts.push((peer, addrs)),
                    IterStep::Waiting => break,
                    IterStep::Finished => {
                        finished = true;
                        break;
                    }
                }
            }
        }
        q.stats.requests += contacts.len() as u32;
        for (peer, addrs) in contacts {
            self.send_request(peer, addrs, request.clone(), RequestKind::Query(id), now);
        }
        if finished {
            self.lookup_finished(id, now);
        }
    }

    /// The lookup of query `id` finished: move to the next phase or finish the query.
    fn lookup_finished(&mut self, id: QueryId, now: Instant) {
        let ctx = Ctx {
            local: &self.local,
            local_key: &self.local_key,
            external_addrs: &self.external_addrs,
            config: &self.config,
            table_size: self.table.len(),
        };
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        match q.state.kind().after_lookup(&mut q.stats, &ctx) {
            AfterLookup::Send { sends, finish } => {
                let empty = sends.is_empty();
                for (peer, addrs, request) in sends {
                    self.send_request(peer, addrs, request, RequestKind::Query(id), now);
                }
                if finish || empty {
                    self.end_query(id, Ending::Done, now);
                }
            }
            AfterLookup::Refresh { first_bucket } => self.start_refresh(id, first_bucket, now),
            AfterLookup::Finish => self.end_query(id, Ending::Done, now),
            AfterLookup::Nothing => {}
        }
    }

    /// Ends query `id` with `error`.
    pub(super) fn fail_query(&mut self, id: QueryId, error: QueryError, now: Instant) {
        self.end_query(id, Ending::Failed(error), now);
    }

    /// Ends query `id` and reports it.
    pub(super) fn end_query(&mut self, id: QueryId, ending: Ending, now: Instant) {
        let Some(mut q) = self.queries.remove(&id) else {
            return;
        };
        q.stats.end = now;
        if matches!(q.state, QueryState::Bootstrap(_)) {
            self.running_bootstrap = None;
        }
        let kind = q.state.kind();
        let outcome = match ending {
            Ending::Failed(error) => Outcome::from(kind.failed(error)),
            Ending::Done | Ending::TimedOut => {
                let ctx = Ctx {
                    local: &self.local,
                    local_key: &self.local_key,
                    external_addrs: &self.external_addrs,
                    config: &self.config,
                    table_size: self.table.len(),
                };
                kind.outcome(matches!(ending, Ending::TimedOut), &mut q.stats, &ctx)
            }
        };
        if let Some((peer, addrs, request)) = outcome.cache {
            self.send_request(peer, addrs, request, RequestKind::Cache, now);
        }
        self.report_finished(id, q.origin, q.parent, q.stats, outcome.result, now);
    }

    /// Reports a finished query: to its parent bootstrap for its refresh lookups, else as a
    /// [`KadEvent::QueryFinished`].
    fn report_finished(
        &mut self,
        id: QueryId,
        origin: QueryOrigin,
        parent: Option<QueryId>,
        stats: QueryStats,
        result: crate::query::QueryResult,
        now: Instant,
    ) {
        if let Some(parent) = parent {
            let mut done = false;
            if let Some(p) = self.queries.get_mut(&parent) {
                p.stats.absorb(&stats);
                if let QueryState::Bootstrap(b) = &mut p.state {
                    done = b.refresh_finished();
                }
            }
            if done {
                self.end_query(parent, Ending::Done, now);
            }
            return;
        }
        tracing::debug!(%id, requests = stats.requests, hops = stats.hops, "query finished");
        self.events.push_back(KadEvent::QueryFinished {
            id,
            origin,
            result,
            stats,
        });
    }
}

/// How a query ends.
pub(super) enum Ending {
    /// Its work is done (or it was stopped through [`KadEngine::finish`]).
    Done,
    /// The query timeout passed.
    TimedOut,
    /// It cannot go on.
    Failed(QueryError),
}
