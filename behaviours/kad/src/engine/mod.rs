//! [`KadEngine`]: the sans-IO Kademlia state machine.
//!
//! The engine never touches a socket or a clock. Its driver (the swarm, or a simulation)
//! feeds it:
//!
//! * inbound requests: [`KadEngine::handle_request`] returns the response to send back (or
//!   `None`: send nothing and close the stream);
//! * outcomes of the requests the engine asked to send: [`KadEngine::handle_response`] (with
//!   the address of the connection it came over, if we dialed it),
//!   [`KadEngine::handle_request_failed`] (the remote failed: counted against it) and
//!   [`KadEngine::handle_request_unsendable`] (the request could not be sent for a local
//!   reason: not counted against the remote);
//! * knowledge about peers: [`KadEngine::add_address`] (e.g. from identify, when the peer
//!   advertises `/ipfs/kad/1.0.0`), [`KadEngine::handle_peer_connected`] and
//!   [`KadEngine::handle_peer_disconnected`];
//! * commands: [`KadEngine::find_node`], [`KadEngine::get_value`], [`KadEngine::put_value`],
//!   [`KadEngine::start_providing`], [`KadEngine::get_providers`], [`KadEngine::bootstrap`];
//! * time: every input takes `now`; the driver calls [`KadEngine::handle_timeout`] when
//!   [`KadEngine::poll_timeout`] is due.
//!
//! After any input the driver takes the requests to send from [`KadEngine::poll_transmit`]
//! ([`KadTransmit`]) and the events from [`KadEngine::poll_event`] ([`KadEvent`]) until both
//! return `None`; each comes out in the order the engine produced it. The engine times
//! requests out by itself (after [`KadConfig::request_timeout`]); a response that arrives
//! after that, or for an unknown request id, is ignored. ADD_PROVIDER requests have no
//! response ([`KadRequest::expects_response`]): the driver sends them and reports nothing
//! back.
//!
//! # Layout
//!
//! Each kind of query (FIND_NODE, GET_VALUE, PUT_VALUE, ADD_PROVIDER, GET_PROVIDERS,
//! bootstrap) keeps all of its logic in a module of its own under `queries`; `commands`
//! starts queries and drives them, `inbound` serves requests, `jobs` runs the periodic work
//! (bootstrap and bucket refresh, republishing, expiry), and this module holds the state,
//! the peer and outcome inputs, time and the outputs.
//!
//! # Addresses in the routing table
//!
//! The routing table holds only first-hand addresses: those given to
//! [`KadEngine::add_address`] (bootstrap peers, identify's report of a peer's listen
//! addresses) and the address a response actually came over
//! ([`KadEngine::handle_response`]'s `addr`). The addresses other peers list for a peer in
//! their responses are used to dial it during the lookup that learned them (they are the
//! lookup's candidate addresses) and are never stored or passed on: a malicious peer listing
//! someone else's IPs for a real peer can neither make us advertise the peer at those IPs nor
//! push its real addresses out of our table.
//!
//! # Message size
//!
//! Every response [`KadEngine::handle_request`] returns fits in
//! [`KadConfig::max_message_size`]: peers are dropped from it until it does
//! ([`KadResponse::trim_to`](crate::protocol::KadResponse::trim_to)). A record that would not
//! fit in one message ([`Record::max_message_len`](crate::protocol::Record::max_message_len))
//! is refused, locally ([`KadEngine::put_value`]) and from remotes, with
//! [`StoreError::RecordTooLarge`](crate::store::StoreError::RecordTooLarge).

mod commands;
mod config;
mod event;
mod inbound;
mod jobs;
mod queries;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::Instant;

use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use self::config::{KadConfig, Mode, MAX_PROVIDER_KEY_LEN};
pub use self::event::{InboundRequest, KadEvent, KadTransmit, RemovalReason, RequestId};
use self::queries::Queries;
use self::requests::{Outstanding, RequestKind, Requests};
use crate::kbucket::{InsertOutcome, Key, PingOutcome, RoutingTable};
use crate::protocol::{KadRequest, KadResponse, ProtocolError};
use crate::query::{QueryError, QueryId};
use crate::store::{ProviderStore, RecordStore};

/// The Kademlia state machine (see the [module docs](self) for how to drive it).
pub struct KadEngine {
    local: PeerId,
    local_key: Key,
    config: KadConfig,
    mode: Mode,
    table: RoutingTable,
    records: RecordStore,
    providers: ProviderStore,
    external_addrs: Vec<Multiaddr>,
    connected: HashSet<PeerId>,
    queries: Queries,
    requests: Requests,
    transmits: VecDeque<KadTransmit>,
    events: VecDeque<KadEvent>,
    rng: StdRng,
    running_bootstrap: Option<QueryId>,
    next_bootstrap: Option<Instant>,
    next_job_tick: Option<Instant>,
}

impl fmt::Debug for KadEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KadEngine")
            .field("local", &self.local)
            .field("mode", &self.mode)
            .field("table_size", &self.table.len())
            .field("queries", &self.queries.len())
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl KadEngine {
    /// An engine for `local` whose randomness (bucket-refresh keys) comes from the OS.
    pub fn new(local: PeerId, config: KadConfig) -> Self {
        Self::with_rng(local, config, StdRng::from_entropy())
    }

    /// An engine whose randomness comes from `seed`: runs are reproducible.
    pub fn with_seed(local: PeerId, config: KadConfig, seed: u64) -> Self {
        Self::with_rng(local, config, StdRng::seed_from_u64(seed))
    }

    fn with_rng(local: PeerId, config: KadConfig, rng: StdRng) -> Self {
        let local_key = Key::from_peer(&local);
        let mut table = RoutingTable::new(local_key, config.k);
        table.set_max_addrs_per_peer(config.max_addrs_per_peer);
        KadEngine {
            local,
            local_key,
            mode: config.mode,
            table,
            records: RecordStore::new(config.store.clone()),
            providers: ProviderStore::new(local, config.store.clone()),
            config,
            external_addrs: Vec::new(),
            connected: HashSet::new(),
            queries: Queries::default(),
            requests: Requests::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            running_bootstrap: None,
            next_bootstrap: None,
            next_job_tick: None,
        }
    }

    /// The local peer id.
    pub fn local_peer_id(&self) -> &PeerId {
        &self.local
    }

    /// The configuration.
    pub fn config(&self) -> &KadConfig {
        &self.config
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches between client and server mode (emits [`KadEvent::ModeChanged`] on change).
    pub fn set_mode(&mut self, mode: Mode) {
        if mode != self.mode {
            self.mode = mode;
            tracing::debug!(?mode, "kad mode changed");
            self.events.push_back(KadEvent::ModeChanged { mode });
        }
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store.
    pub fn record_store(&self) -> &RecordStore {
        &self.records
    }

    /// The provider store.
    pub fn provider_store(&self) -> &ProviderStore {
        &self.providers
    }

    /// Sets the addresses the local node announces in ADD_PROVIDER requests.
    pub fn set_external_addresses(&mut self, addrs: Vec<Multiaddr>) {
        self.external_addrs = addrs;
    }

    /// Number of queries running.
    pub fn num_queries(&self) -> usize {
        self.queries.len()
    }

    // ----- peers -------------------------------------------------------------------------

    /// A peer serving the DHT at `addr` (e.g. identify reported `/ipfs/kad/1.0.0`): adds it
    /// to the routing table or refreshes it. A full bucket may trigger a liveness ping of its
    /// least recently seen peer (ping before evict).
    pub fn add_address(&mut self, peer: PeerId, addr: Multiaddr, now: Instant) -> InsertOutcome {
        let outcome = self.insert_peer(peer, std::slice::from_ref(&addr), now);
        self.drive(now);
        outcome
    }

    /// A connection to `peer` was established: marks it seen if it is in the table; responses
    /// then describe it as connected.
    pub fn handle_peer_connected(&mut self, peer: PeerId, now: Instant) {
        self.connected.insert(peer);
        self.table.mark_seen(&peer, now);
    }

    /// The last connection to `peer` closed.
    pub fn handle_peer_disconnected(&mut self, peer: &PeerId) {
        self.connected.remove(peer);
    }

    /// Removes `peer` from the routing table.
    pub fn remove_peer(&mut self, peer: &PeerId) -> bool {
        self.remove_from_table(peer, RemovalReason::Requested)
    }

    fn insert_peer(&mut self, peer: PeerId, addrs: &[Multiaddr], now: Instant) -> InsertOutcome {
        let outcome = self.table.insert_or_update(peer, addrs, now);
        match &outcome {
            InsertOutcome::Inserted { bucket } => {
                tracing::trace!(%peer, bucket, "peer added to routing table");
                self.emit_routing_updated(peer, *bucket, true, None);
            }
            InsertOutcome::Updated {
                bucket,
                new_address: true,
            } => {
                self.emit_routing_updated(peer, *bucket, false, None);
            }
            InsertOutcome::Pending { ping, .. } => {
                let ping = *ping;
                let addrs = self
                    .table
                    .get(&ping)
                    .map(|n| n.addrs.clone())
                    .unwrap_or_default();
                self.send_request(ping, addrs, KadRequest::Ping, RequestKind::Ping, now);
            }
            _ => {}
        }
        outcome
    }

    fn emit_routing_updated(
        &mut self,
        peer: PeerId,
        bucket: usize,
        is_new_peer: bool,
        evicted: Option<PeerId>,
    ) {
        let addresses = self
            .table
            .get(&peer)
            .map(|n| n.addrs.clone())
            .unwrap_or_default();
        self.events.push_back(KadEvent::RoutingUpdated {
            peer,
            addresses,
            bucket,
            is_new_peer,
            evicted,
        });
    }

    fn remove_from_table(&mut self, peer: &PeerId, reason: RemovalReason) -> bool {
        let Some(removed) = self.table.remove(peer) else {
            return false;
        };
        tracing::debug!(%peer, ?reason, "peer removed from routing table");
        self.events.push_back(KadEvent::PeerRemoved {
            peer: *peer,
            bucket: removed.bucket,
            reason,
        });
        if let Some(promoted) = removed.promoted {
            self.emit_routing_updated(promoted, removed.bucket, true, None);
        }
        true
    }

    // ----- outcomes of our requests ------------------------------------------------------

    /// The response to request `request_id`, from `from`, which came over a connection to
    /// `addr`: the address we dialed, if we dialed that connection, else `None`.
    ///
    /// The peer answered, so it serves the DHT and is alive: it is marked seen, and `addr` is
    /// the one address recorded for it (it enters the routing table with it if it was not
    /// there). Without `addr` a peer not in the table is not added: it has no address we
    /// know works. The addresses other peers gave for it are never recorded (see the module
    /// docs).
    pub fn handle_response(
        &mut self,
        request_id: RequestId,
        from: PeerId,
        addr: Option<Multiaddr>,
        response: KadResponse,
        now: Instant,
    ) {
        let Some(out) = self.requests.take(request_id) else {
            tracing::trace!(%request_id, "response to an unknown or expired request");
            return;
        };
        if out.peer != from {
            tracing::debug!(%request_id, expected = %out.peer, %from, "response from the wrong peer");
            self.fail_request(out, false, now);
            self.drive(now);
            return;
        }
        // It answered, so it serves the DHT and is alive.
        match addr {
            Some(addr) => {
                self.insert_peer(from, std::slice::from_ref(&addr), now);
            }
            None => {
                self.table.mark_seen(&from, now);
            }
        }
        match out.kind {
            RequestKind::Ping => {
                let alive = matches!(response, KadResponse::Pong);
                self.apply_ping(&from, alive, now);
            }
            RequestKind::Cache => {
                tracing::trace!(%from, ok = matches!(response, KadResponse::PutValue { .. }), "record cached");
            }
            RequestKind::Query(id) => self.query_response(id, from, response, now),
        }
        self.drive(now);
    }

    /// Request `request_id` failed on the remote's side or on the way (stream error, dial
    /// failure, undecodable response, ...): it counts against the peer, which leaves the
    /// routing table after [`KadConfig::max_failures`] failures in a row.
    pub fn handle_request_failed(&mut self, request_id: RequestId, now: Instant) {
        if let Some(out) = self.requests.take(request_id) {
            self.fail_request(out, false, now);
            self.drive(now);
        }
    }

    /// Request `request_id` could not be sent for a local reason: `error` says why (it does
    /// not fit in a message). Nothing is counted against the peer. Every request of a query
    /// carries the same payload, so the query finishes at once with
    /// [`QueryError::Unsendable`]; a liveness ping or a cache store is dropped (the pinged
    /// peer is kept).
    pub fn handle_request_unsendable(
        &mut self,
        request_id: RequestId,
        error: ProtocolError,
        now: Instant,
    ) {
        let Some(out) = self.requests.take(request_id) else {
            return;
        };
        tracing::debug!(peer = %out.peer, kind = ?out.kind, %error, "request cannot be sent");
        match out.kind {
            RequestKind::Ping => self.apply_ping(&out.peer, true, now),
            RequestKind::Cache => {}
            RequestKind::Query(id) => {
                if let Some(q) = self.queries.get_mut(&id) {
                    q.stats.failures += 1;
                }
                self.fail_query(id, QueryError::Unsendable(error), now);
            }
        }
        self.drive(now);
    }

    fn fail_request(&mut self, out: Outstanding, timed_out: bool, now: Instant) {
        tracing::trace!(peer = %out.peer, kind = ?out.kind, "request failed");
        match out.kind {
            RequestKind::Ping => {
                self.apply_ping(&out.peer, false, now);
                return;
            }
            RequestKind::Cache => {}
            RequestKind::Query(id) => self.query_failure(id, &out.peer, timed_out),
        }
        if self.table.record_failure(&out.peer) >= self.config.max_failures {
            self.remove_from_table(&out.peer, RemovalReason::Unresponsive);
        }
    }

    fn apply_ping(&mut self, peer: &PeerId, alive: bool, now: Instant) {
        if let PingOutcome::Replaced {
            bucket,
            evicted,
            inserted,
        } = self.table.on_ping_result(peer, alive, now)
        {
            tracing::debug!(%evicted, %inserted, bucket, "evicted unresponsive peer");
            self.events.push_back(KadEvent::PeerRemoved {
                peer: evicted,
                bucket,
                reason: RemovalReason::Unresponsive,
            });
            self.emit_routing_updated(inserted, bucket, true, Some(evicted));
        }
    }

    // ----- time and outputs --------------------------------------------------------------

    /// When [`KadEngine::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.requests.next_deadline(),
            self.queries.next_deadline(),
            self.next_bootstrap,
            self.next_job_tick,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due at `now`: request and query timeouts, the periodic bootstrap, the
    /// store jobs (expiry, republishing). Calling it early does nothing but drive queries.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
        self.drive(now);
    }

    /// The next request to send, in the order the engine asked for them.
    pub fn poll_transmit(&mut self) -> Option<KadTransmit> {
        self.transmits.pop_front()
    }

    /// The next event, in the order the engine produced them.
    pub fn poll_event(&mut self) -> Option<KadEvent> {
        self.events.pop_front()
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: KadRequest,
        kind: RequestKind,
        now: Instant,
    ) {
        let request_id = self.requests.next_id();
        if request.expects_response() {
            let deadline = now + self.config.request_timeout;
            self.requests.track(request_id, peer, kind, deadline);
        }
        self.transmits.push_back(KadTransmit {
            request_id,
            peer,
            addrs,
            request,
        });
    }

    /// Drives the queries that changed (sending their next requests, moving them to their
    /// next phase or finishing them); starts the store jobs' clock at the first input.
    fn drive(&mut self, now: Instant) {
        if self.next_job_tick.is_none() {
            self.start_job_clock(now);
        }
        while let Some(id) = self.queries.next_dirty() {
            self.drive_query(id, now);
        }
    }
}
