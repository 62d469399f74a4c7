//! [`KadCore`]: the sans-IO Kademlia state machine.
//!
//! The core never touches a socket or a clock. Its driver (the swarm, or a simulation) feeds
//! it:
//!
//! * inbound requests: [`KadCore::handle_request`] returns the response to send back (or
//!   `None`: send nothing and close the stream);
//! * outcomes of the requests the core asked to send: [`KadCore::on_response`] (with the
//!   address of the connection it came over, if we dialed it), [`KadCore::on_request_failed`]
//!   (the remote failed: counted against it) and [`KadCore::on_request_unsendable`] (the
//!   request could not be sent for a local reason: not counted against the remote);
//! * knowledge about peers: [`KadCore::add_address`] (e.g. from identify, when the peer
//!   advertises `/ipfs/kad/1.0.0`), [`KadCore::on_peer_connected`] and
//!   [`KadCore::on_peer_disconnected`];
//! * commands: [`KadCore::find_node`], [`KadCore::get_value`], [`KadCore::put_value`],
//!   [`KadCore::start_providing`], [`KadCore::get_providers`], [`KadCore::bootstrap`];
//! * time: every call takes `now`; after any call, the driver calls [`KadCore::poll`] until it
//!   returns `None`, and calls it again at [`KadCore::next_timeout`] at the latest.
//!
//! [`KadCore::poll`] hands out [`KadOutput`]s: requests to send
//! ([`KadOutput::SendRequest`]) and [`KadEvent`]s. The core times requests out by itself
//! (after [`KadConfig::request_timeout`]); a response that arrives after that, or for an
//! unknown request id, is ignored. ADD_PROVIDER requests have no response
//! ([`KadRequest::expects_response`]): the driver sends them and reports nothing back.
//!
//! # Addresses in the routing table
//!
//! The routing table holds only first-hand addresses: those given to
//! [`KadCore::add_address`] (bootstrap peers, identify's report of a peer's listen addresses)
//! and the address a response actually came over ([`KadCore::on_response`]'s `addr`). The
//! addresses other peers list for a peer in their responses are used to dial it during the
//! lookup that learned them (they are the lookup's candidate addresses) and are never stored
//! or passed on: a malicious peer listing someone else's IPs for a real peer can neither make
//! us advertise the peer at those IPs nor push its real addresses out of our table.
//!
//! # Message size
//!
//! Every response [`KadCore::handle_request`] returns fits in
//! [`KadConfig::max_message_size`]: peers are dropped from it until it does
//! ([`KadResponse::trim_to`]). A record that would not fit in one message
//! ([`Record::max_message_len`]) is refused, locally ([`KadCore::put_value`]) and from
//! remotes, with [`StoreError::RecordTooLarge`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::kbucket::{
    InsertOutcome, Key, PingOutcome, RoutingTable, DEFAULT_K, DEFAULT_MAX_ADDRS_PER_PEER,
    NUM_BUCKETS,
};
use crate::protocol::{
    ConnectionType, KadPeer, KadRequest, KadResponse, ProtocolError, Record, RecordKey,
    DEFAULT_MAX_MESSAGE_SIZE,
};
use crate::query::{
    AddProviderOk, BootstrapOk, ClosestPeersIter, FindNodeOk, GetProvidersOk, GetValueOk, IterStep,
    PeerRecord, PutValueOk, QueryError, QueryId, QueryOrigin, QueryProgress, QueryResult,
    QueryStats,
};
use crate::store::{ProviderStore, RecordStore, StoreConfig, StoreError};

/// Longest provider key served (as go-libp2p: keys are multihashes, at most 80 bytes).
pub const MAX_PROVIDER_KEY_LEN: usize = 80;

/// Draws allowed to find a refresh key in a bucket. Bucket `i` needs about `2^(256 - i)`, so
/// 4096 aims exactly down to bucket 244 — the closest occupied buckets of networks of a few
/// thousand peers; deeper buckets get the nearest draw, and the self lookup covers the
/// closest neighbourhood anyway. (rust-libp2p draws 16 random peer ids.)
const MAX_REFRESH_KEY_DRAWS: usize = 4096;

/// How often the record and provider stores are swept and their periodic jobs checked.
const JOB_TICK: Duration = Duration::from_secs(60);

/// Identifies one outbound request of one core.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RequestId(u64);

impl RequestId {
    /// The number behind the id.
    pub fn raw(self) -> u64 {
        self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(n: u64) -> Self {
        RequestId(n)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req#{}", self.0)
    }
}

/// Whether the node serves the DHT.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Mode {
    /// Uses the DHT without serving it: answers no request and must not advertise
    /// `/ipfs/kad/1.0.0` (so no peer adds it to its routing table). For nodes that are not
    /// publicly reachable.
    Client,
    /// Serves the DHT: answers requests and advertises the protocol.
    #[default]
    Server,
}

/// Configuration of a [`KadCore`].
#[derive(Clone, Debug)]
pub struct KadConfig {
    /// Bucket size and replication factor `k` (20).
    pub k: usize,
    /// Lookup parallelism `α` (3).
    pub alpha: usize,
    /// Timeout of one request (10 s).
    pub request_timeout: Duration,
    /// Timeout of a whole query (60 s).
    pub query_timeout: Duration,
    /// Initial mode (server).
    pub mode: Mode,
    /// Interval of the periodic bootstrap, which starts with the first [`KadCore::bootstrap`]
    /// (5 min); `None` disables it.
    pub bootstrap_interval: Option<Duration>,
    /// Consecutive failed requests after which a peer is dropped from the routing table (3).
    pub max_failures: u32,
    /// How many times a lookup asks a peer again after its request timed out, while the peer
    /// still ranks among the `k` closest candidates (0, as libp2p). Over QUIC a timeout
    /// usually means a dead peer, and each retry of a dead peer delays the lookup by
    /// `request_timeout`; on lossy paths retries keep live peers in the result.
    pub lookup_retries: u32,
    /// Addresses kept per peer (8).
    pub max_addrs_per_peer: usize,
    /// After a successful GET_VALUE, store the record at the closest peer that answered
    /// without it (true).
    pub caching: bool,
    /// Largest message accepted or sent, prefix excluded (16 KiB); used by the driver's codec
    /// ([`KadConfig::codec`]).
    pub max_message_size: usize,
    /// Record and provider store limits and intervals.
    pub store: StoreConfig,
}

impl Default for KadConfig {
    fn default() -> Self {
        KadConfig {
            k: DEFAULT_K,
            alpha: 3,
            request_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(60),
            mode: Mode::Server,
            bootstrap_interval: Some(Duration::from_secs(300)),
            max_failures: 3,
            lookup_retries: 0,
            max_addrs_per_peer: DEFAULT_MAX_ADDRS_PER_PEER,
            caching: true,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            store: StoreConfig::default(),
        }
    }
}

impl KadConfig {
    /// The codec the driver should frame messages with.
    pub fn codec(&self) -> crate::protocol::KadCodec {
        crate::protocol::KadCodec::new(self.max_message_size)
    }
}

/// Something the driver must do or may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KadOutput {
    /// Open a `/ipfs/kad/1.0.0` stream to `peer` (dialing `addrs` if not connected), send
    /// `request`, and report the response with [`KadCore::on_response`] or the failure with
    /// [`KadCore::on_request_failed`] — unless [`KadRequest::expects_response`] is `false`.
    SendRequest {
        /// Identifies the request in the report.
        request_id: RequestId,
        /// The peer to ask.
        peer: PeerId,
        /// Its known addresses (may be empty if only the driver knows how to reach it).
        addrs: Vec<Multiaddr>,
        /// The request.
        request: KadRequest,
    },
    /// An event for the application or the swarm.
    Event(KadEvent),
}

/// Why a peer left the routing table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RemovalReason {
    /// It failed [`KadConfig::max_failures`] requests in a row.
    Unresponsive,
    /// Removed through [`KadCore::remove_peer`].
    Requested,
}

/// An inbound request the core handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundRequest {
    /// A PING.
    Ping,
    /// A FIND_NODE; `closer_peers` were returned (after trimming the response to the message
    /// bound).
    FindNode {
        /// Peers returned.
        closer_peers: usize,
    },
    /// A GET_VALUE for `key`.
    GetValue {
        /// The key.
        key: RecordKey,
        /// Whether the record was returned.
        found: bool,
    },
    /// A PUT_VALUE of `key`, stored or refused.
    PutValue {
        /// The key.
        key: RecordKey,
        /// The outcome of storing it.
        result: Result<(), StoreError>,
    },
    /// A GET_PROVIDERS for `key`.
    GetProviders {
        /// The key.
        key: RecordKey,
        /// Providers returned.
        providers: usize,
    },
    /// An ADD_PROVIDER for `key`, stored or refused.
    AddProvider {
        /// The key.
        key: RecordKey,
        /// The outcome (a provider that is not the sender is ignored: `Ok(false)`).
        result: Result<bool, StoreError>,
    },
}

/// Events of the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KadEvent {
    /// A running query made progress.
    QueryProgress {
        /// The query.
        id: QueryId,
        /// What happened.
        progress: QueryProgress,
    },
    /// A query finished.
    QueryFinished {
        /// The query.
        id: QueryId,
        /// Who started it.
        origin: QueryOrigin,
        /// Its outcome.
        result: QueryResult,
        /// Its statistics.
        stats: QueryStats,
    },
    /// A peer entered the routing table, or a peer in it got a new address. The swarm may tag
    /// it in the connection manager.
    RoutingUpdated {
        /// The peer.
        peer: PeerId,
        /// Its addresses now.
        addresses: Vec<Multiaddr>,
        /// Its bucket.
        bucket: usize,
        /// Whether it just entered the table.
        is_new_peer: bool,
        /// A peer evicted to make room for it (after failing the liveness ping).
        evicted: Option<PeerId>,
    },
    /// A peer left the routing table (the swarm may untag it).
    PeerRemoved {
        /// The peer.
        peer: PeerId,
        /// Its bucket.
        bucket: usize,
        /// Why.
        reason: RemovalReason,
    },
    /// An inbound request was handled (records and providers stored are reported here).
    InboundRequest {
        /// The sender.
        from: PeerId,
        /// What it asked and what the core did.
        request: InboundRequest,
    },
    /// The mode changed: the swarm should start or stop advertising `/ipfs/kad/1.0.0`.
    ModeChanged {
        /// The new mode.
        mode: Mode,
    },
}

/// What an outstanding request is for.
#[derive(Clone, Copy, Debug)]
enum RequestKind {
    Query(QueryId),
    /// Liveness ping of a full bucket's least recently seen peer.
    Ping,
    /// PUT_VALUE caching a record after a GET_VALUE.
    Cache,
}

#[derive(Debug)]
struct Outstanding {
    peer: PeerId,
    kind: RequestKind,
    deadline: Instant,
}

#[derive(Debug)]
enum QueryState {
    FindNode {
        key: Vec<u8>,
        iter: ClosestPeersIter,
    },
    GetValue {
        key: RecordKey,
        quorum: usize,
        iter: ClosestPeersIter,
        records: Vec<PeerRecord>,
        /// Peers that answered without the record.
        without: HashSet<PeerId>,
        /// Largest round among the peers that returned a record.
        record_hops: u32,
    },
    PutValue {
        record: Record,
        quorum: usize,
        phase: PutPhase,
    },
    AddProvider {
        key: RecordKey,
        iter: ClosestPeersIter,
    },
    GetProviders {
        key: RecordKey,
        limit: Option<usize>,
        iter: ClosestPeersIter,
        providers: Vec<KadPeer>,
    },
    Bootstrap {
        phase: BootstrapPhase,
        lookups: usize,
    },
}

impl QueryState {
    /// The result of a query of this kind that failed with `error`.
    fn failed(self, error: QueryError) -> QueryResult {
        match self {
            QueryState::FindNode { .. } => QueryResult::FindNode(Err(error)),
            QueryState::GetValue { .. } => QueryResult::GetValue(Err(error)),
            QueryState::PutValue { .. } => QueryResult::PutValue(Err(error)),
            QueryState::AddProvider { .. } => QueryResult::StartProviding(Err(error)),
            QueryState::GetProviders { .. } => QueryResult::GetProviders(Err(error)),
            QueryState::Bootstrap { .. } => QueryResult::Bootstrap(Err(error)),
        }
    }
}

/// How a query ends.
enum Ending {
    /// Its work is done (or it was stopped through [`KadCore::finish`]).
    Done,
    /// The query timeout passed.
    TimedOut,
    /// It cannot go on.
    Failed(QueryError),
}

#[derive(Debug)]
enum PutPhase {
    FindPeers(ClosestPeersIter),
    Store { pending: usize, successes: usize },
}

#[derive(Debug)]
enum BootstrapPhase {
    SelfLookup(ClosestPeersIter),
    Refresh { remaining: usize },
}

#[derive(Debug)]
struct Query {
    origin: QueryOrigin,
    /// Set for the bucket-refresh lookups of a bootstrap: they report to it, not to the user.
    parent: Option<QueryId>,
    state: QueryState,
    stats: QueryStats,
    deadline: Option<Instant>,
    dirty: bool,
}

impl Query {
    fn iter_mut(&mut self) -> Option<&mut ClosestPeersIter> {
        match &mut self.state {
            QueryState::FindNode { iter, .. }
            | QueryState::GetValue { iter, .. }
            | QueryState::AddProvider { iter, .. }
            | QueryState::GetProviders { iter, .. } => Some(iter),
            QueryState::PutValue {
                phase: PutPhase::FindPeers(iter),
                ..
            } => Some(iter),
            QueryState::Bootstrap {
                phase: BootstrapPhase::SelfLookup(iter),
                ..
            } => Some(iter),
            _ => None,
        }
    }

    /// The request a lookup sends to each peer it contacts.
    fn lookup_request(&self, local: &PeerId) -> Option<KadRequest> {
        Some(match &self.state {
            QueryState::FindNode { key, .. } => KadRequest::FindNode { key: key.clone() },
            QueryState::GetValue { key, .. } => KadRequest::GetValue { key: key.clone() },
            QueryState::GetProviders { key, .. } => KadRequest::GetProviders { key: key.clone() },
            QueryState::AddProvider { key, .. } => KadRequest::FindNode { key: key.to_vec() },
            QueryState::PutValue {
                record,
                phase: PutPhase::FindPeers(_),
                ..
            } => KadRequest::FindNode {
                key: record.key.to_vec(),
            },
            QueryState::Bootstrap {
                phase: BootstrapPhase::SelfLookup(_),
                ..
            } => KadRequest::FindNode {
                key: local.to_bytes(),
            },
            _ => return None,
        })
    }
}

/// The Kademlia state machine (see the module docs for how to drive it).
pub struct KadCore {
    local: PeerId,
    local_key: Key,
    config: KadConfig,
    mode: Mode,
    table: RoutingTable,
    records: RecordStore,
    providers: ProviderStore,
    external_addrs: Vec<Multiaddr>,
    connected: HashSet<PeerId>,
    queries: BTreeMap<QueryId, Query>,
    dirty: Vec<QueryId>,
    query_deadlines: BTreeSet<(Instant, QueryId)>,
    requests: HashMap<RequestId, Outstanding>,
    request_deadlines: BTreeSet<(Instant, RequestId)>,
    outputs: VecDeque<KadOutput>,
    rng: StdRng,
    next_query_id: u64,
    next_request_id: u64,
    running_bootstrap: Option<QueryId>,
    next_bootstrap: Option<Instant>,
    next_job_tick: Option<Instant>,
}

impl fmt::Debug for KadCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KadCore")
            .field("local", &self.local)
            .field("mode", &self.mode)
            .field("table_size", &self.table.len())
            .field("queries", &self.queries.len())
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl KadCore {
    /// A core for `local` whose randomness (bucket-refresh keys) comes from the OS.
    pub fn new(local: PeerId, config: KadConfig) -> Self {
        Self::with_rng(local, config, StdRng::from_entropy())
    }

    /// A core whose randomness comes from `seed`: runs are reproducible.
    pub fn with_seed(local: PeerId, config: KadConfig, seed: u64) -> Self {
        Self::with_rng(local, config, StdRng::seed_from_u64(seed))
    }

    fn with_rng(local: PeerId, config: KadConfig, rng: StdRng) -> Self {
        let local_key = Key::from_peer(&local);
        let mut table = RoutingTable::new(local_key, config.k);
        table.set_max_addrs_per_peer(config.max_addrs_per_peer);
        KadCore {
            local,
            local_key,
            mode: config.mode,
            table,
            records: RecordStore::new(config.store.clone()),
            providers: ProviderStore::new(local, config.store.clone()),
            config,
            external_addrs: Vec::new(),
            connected: HashSet::new(),
            queries: BTreeMap::new(),
            dirty: Vec::new(),
            query_deadlines: BTreeSet::new(),
            requests: HashMap::new(),
            request_deadlines: BTreeSet::new(),
            outputs: VecDeque::new(),
            rng,
            next_query_id: 0,
            next_request_id: 0,
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
            self.outputs
                .push_back(KadOutput::Event(KadEvent::ModeChanged { mode }));
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
        self.insert_peer(peer, std::slice::from_ref(&addr), now)
    }

    /// A connection to `peer` was established: marks it seen if it is in the table; responses
    /// then describe it as [`ConnectionType::Connected`].
    pub fn on_peer_connected(&mut self, peer: PeerId, now: Instant) {
        self.connected.insert(peer);
        self.table.mark_seen(&peer, now);
    }

    /// The last connection to `peer` closed.
    pub fn on_peer_disconnected(&mut self, peer: &PeerId) {
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
        self.outputs
            .push_back(KadOutput::Event(KadEvent::RoutingUpdated {
                peer,
                addresses,
                bucket,
                is_new_peer,
                evicted,
            }));
    }

    fn remove_from_table(&mut self, peer: &PeerId, reason: RemovalReason) -> bool {
        let Some(removed) = self.table.remove(peer) else {
            return false;
        };
        tracing::debug!(%peer, ?reason, "peer removed from routing table");
        self.outputs
            .push_back(KadOutput::Event(KadEvent::PeerRemoved {
                peer: *peer,
                bucket: removed.bucket,
                reason,
            }));
        if let Some(promoted) = removed.promoted {
            self.emit_routing_updated(promoted, removed.bucket, true, None);
        }
        true
    }

    // ----- inbound -----------------------------------------------------------------------

    /// Handles a request from `from` and returns the response to send (`None`: send nothing
    /// and close the stream — in client mode, for ADD_PROVIDER, and for refused requests).
    pub fn handle_request(
        &mut self,
        from: PeerId,
        request: KadRequest,
        now: Instant,
    ) -> Option<KadResponse> {
        if self.mode == Mode::Client {
            tracing::debug!(%from, "ignoring inbound request in client mode");
            return None;
        }
        self.table.mark_seen(&from, now);
        let (mut response, mut event) = match request {
            KadRequest::Ping => (Some(KadResponse::Pong), InboundRequest::Ping),
            KadRequest::FindNode { key } => {
                let closer_peers = self.closer_peers(&Key::from_bytes(&key), &from);
                let n = closer_peers.len();
                (
                    Some(KadResponse::FindNode { closer_peers }),
                    InboundRequest::FindNode { closer_peers: n },
                )
            }
            KadRequest::GetValue { key } => {
                let record = self.records.get_stored(&key, now).map(|r| r.to_record(now));
                let closer_peers = self.closer_peers(&Key::from_bytes(key.as_bytes()), &from);
                let found = record.is_some();
                (
                    Some(KadResponse::GetValue {
                        record,
                        closer_peers,
                    }),
                    InboundRequest::GetValue { key, found },
                )
            }
            KadRequest::PutValue { record } => {
                let key = record.key.clone();
                let result = self
                    .check_record(&record)
                    .and_then(|()| self.records.put(record.clone(), false, now));
                let response = result.is_ok().then(|| {
                    let mut echo = record;
                    echo.ttl = None;
                    KadResponse::PutValue { record: echo }
                });
                (response, InboundRequest::PutValue { key, result })
            }
            KadRequest::GetProviders { key } => {
                if key.as_bytes().is_empty() || key.as_bytes().len() > MAX_PROVIDER_KEY_LEN {
                    tracing::debug!(%from, len = key.as_bytes().len(), "refusing GET_PROVIDERS with a bad key");
                    return None;
                }
                let provider_peers: Vec<KadPeer> = self
                    .providers
                    .get(&key, now)
                    .into_iter()
                    .map(|p| {
                        let mut addrs = p.addrs.clone();
                        if addrs.is_empty() {
                            addrs = self
                                .table
                                .get(&p.provider)
                                .map(|n| n.addrs.clone())
                                .unwrap_or_default();
                        }
                        KadPeer {
                            id: p.provider,
                            addrs,
                            connection: self.connection_type(&p.provider),
                        }
                    })
                    .collect();
                let closer_peers = self.closer_peers(&Key::from_bytes(key.as_bytes()), &from);
                let n = provider_peers.len();
                (
                    Some(KadResponse::GetProviders {
                        closer_peers,
                        provider_peers,
                    }),
                    InboundRequest::GetProviders { key, providers: n },
                )
            }
            KadRequest::AddProvider { key, provider } => {
                let result = if key.as_bytes().is_empty()
                    || key.as_bytes().len() > MAX_PROVIDER_KEY_LEN
                {
                    Ok(false)
                } else if provider.id != from {
                    tracing::debug!(%from, provider = %provider.id, "ignoring ADD_PROVIDER for another peer");
                    Ok(false)
                } else {
                    self.providers
                        .add(key.clone(), provider, now)
                        .map(|()| true)
                };
                (None, InboundRequest::AddProvider { key, result })
            }
        };
        if let Some(r) = response.as_mut() {
            // A response that does not fit would reset the stream: drop peers until it fits.
            if !r.trim_to(self.config.max_message_size) {
                tracing::warn!(%from, kind = ?r.message_type(), "response does not fit in a message");
            }
            match (&mut event, &*r) {
                (
                    InboundRequest::FindNode { closer_peers: n },
                    KadResponse::FindNode { closer_peers },
                ) => *n = closer_peers.len(),
                (
                    InboundRequest::GetProviders { providers: n, .. },
                    KadResponse::GetProviders { provider_peers, .. },
                ) => *n = provider_peers.len(),
                _ => {}
            }
        }
        self.outputs
            .push_back(KadOutput::Event(KadEvent::InboundRequest {
                from,
                request: event,
            }));
        response
    }

    fn connection_type(&self, peer: &PeerId) -> ConnectionType {
        if !self.connected.is_empty() && self.connected.contains(peer) {
            ConnectionType::Connected
        } else {
            ConnectionType::NotConnected
        }
    }

    /// The `k` peers of the routing table closest to `target`, without `exclude`.
    fn closer_peers(&self, target: &Key, exclude: &PeerId) -> Vec<KadPeer> {
        self.table
            .closest(target, self.config.k + 1)
            .filter(|n| n.peer != *exclude)
            .take(self.config.k)
            .map(|n| KadPeer {
                id: n.peer,
                addrs: n.addrs.clone(),
                connection: self.connection_type(&n.peer),
            })
            .collect()
    }

    // ----- outbound outcomes -------------------------------------------------------------

    /// The response to request `request_id`, from `from`, which came over a connection to
    /// `addr`: the address we dialed, if we dialed that connection, else `None`.
    ///
    /// The peer answered, so it serves the DHT and is alive: it is marked seen, and `addr` is
    /// the one address recorded for it (it enters the routing table with it if it was not
    /// there). Without `addr` a peer not in the table is not added: it has no address we
    /// know works. The addresses other peers gave for it are never recorded (see the module
    /// docs).
    pub fn on_response(
        &mut self,
        request_id: RequestId,
        from: PeerId,
        addr: Option<Multiaddr>,
        response: KadResponse,
        now: Instant,
    ) {
        let Some(out) = self.take_request(request_id) else {
            tracing::trace!(%request_id, "response to an unknown or expired request");
            return;
        };
        if out.peer != from {
            tracing::debug!(%request_id, expected = %out.peer, %from, "response from the wrong peer");
            self.fail_request(out, false, now);
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
    }

    /// Request `request_id` failed on the remote's side or on the way (stream error, dial
    /// failure, undecodable response, ...): it counts against the peer, which leaves the
    /// routing table after [`KadConfig::max_failures`] failures in a row.
    pub fn on_request_failed(&mut self, request_id: RequestId, now: Instant) {
        if let Some(out) = self.take_request(request_id) {
            self.fail_request(out, false, now);
        }
    }

    /// Request `request_id` could not be sent for a local reason: `error` says why (it does
    /// not fit in a message). Nothing is counted against the peer. Every request of a query
    /// carries the same payload, so the query finishes at once with
    /// [`QueryError::Unsendable`]; a liveness ping or a cache store is dropped (the pinged
    /// peer is kept).
    pub fn on_request_unsendable(
        &mut self,
        request_id: RequestId,
        error: ProtocolError,
        now: Instant,
    ) {
        let Some(out) = self.take_request(request_id) else {
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
                self.end_query(id, Ending::Failed(QueryError::Unsendable(error)), now);
            }
        }
    }

    /// Refuses a record that could not be stored or that no message could carry.
    fn check_record(&self, record: &Record) -> Result<(), StoreError> {
        let value = record.value.len();
        if value > self.config.store.max_value_bytes {
            return Err(StoreError::ValueTooLarge(value));
        }
        let (len, max) = (record.max_message_len(), self.config.max_message_size);
        if len > max {
            return Err(StoreError::RecordTooLarge { len, max });
        }
        Ok(())
    }

    fn take_request(&mut self, id: RequestId) -> Option<Outstanding> {
        let out = self.requests.remove(&id)?;
        self.request_deadlines.remove(&(out.deadline, id));
        Some(out)
    }

    fn fail_request(&mut self, out: Outstanding, timed_out: bool, now: Instant) {
        tracing::trace!(peer = %out.peer, kind = ?out.kind, "request failed");
        match out.kind {
            RequestKind::Ping => {
                self.apply_ping(&out.peer, false, now);
                return;
            }
            RequestKind::Cache => {}
            RequestKind::Query(id) => {
                if let Some(q) = self.queries.get_mut(&id) {
                    q.stats.failures += 1;
                    let failed = match &mut q.state {
                        QueryState::PutValue {
                            phase: PutPhase::Store { pending, .. },
                            ..
                        } => {
                            *pending = pending.saturating_sub(1);
                            true
                        }
                        _ => q.iter_mut().is_some_and(|it| {
                            if timed_out {
                                it.on_timeout(&out.peer)
                            } else {
                                it.on_failure(&out.peer)
                            }
                        }),
                    };
                    if failed {
                        self.mark_dirty(id);
                    }
                }
            }
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
            self.outputs
                .push_back(KadOutput::Event(KadEvent::PeerRemoved {
                    peer: evicted,
                    bucket,
                    reason: RemovalReason::Unresponsive,
                }));
            self.emit_routing_updated(inserted, bucket, true, Some(evicted));
        }
    }

    fn query_response(&mut self, id: QueryId, from: PeerId, response: KadResponse, now: Instant) {
        let local = self.local;
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let mut progress = None;
        let mut finish = false;
        let ok = match (&mut q.state, response) {
            (QueryState::FindNode { iter, .. }, KadResponse::FindNode { closer_peers })
            | (QueryState::AddProvider { iter, .. }, KadResponse::FindNode { closer_peers })
            | (
                QueryState::PutValue {
                    phase: PutPhase::FindPeers(iter),
                    ..
                },
                KadResponse::FindNode { closer_peers },
            )
            | (
                QueryState::Bootstrap {
                    phase: BootstrapPhase::SelfLookup(iter),
                    ..
                },
                KadResponse::FindNode { closer_peers },
            ) => iter.on_success(&from, closer_peers, Some(&local)),
            (
                QueryState::GetValue {
                    key,
                    quorum,
                    iter,
                    records,
                    without,
                    record_hops,
                },
                KadResponse::GetValue {
                    record,
                    closer_peers,
                },
            ) => {
                let depth = iter.candidate(&from).map(|c| c.depth).unwrap_or(0);
                let ok = iter.on_success(&from, closer_peers, Some(&local));
                match record {
                    Some(record) if record.key == *key => {
                        let pr = PeerRecord {
                            peer: Some(from),
                            record,
                        };
                        records.push(pr.clone());
                        *record_hops = (*record_hops).max(depth + 1);
                        progress = Some(QueryProgress::FoundRecord(pr));
                        if records.len() >= *quorum {
                            finish = true;
                        }
                    }
                    Some(_) => {
                        tracing::debug!(%from, "GET_VALUE answered with a record of another key")
                    }
                    None => {
                        without.insert(from);
                    }
                }
                ok
            }
            (
                QueryState::GetProviders {
                    limit,
                    iter,
                    providers,
                    ..
                },
                KadResponse::GetProviders {
                    closer_peers,
                    provider_peers,
                },
            ) => {
                let ok = iter.on_success(&from, closer_peers, Some(&local));
                let mut new = Vec::new();
                for p in provider_peers {
                    if !providers.iter().any(|q| q.id == p.id) {
                        providers.push(p.clone());
                        new.push(p);
                    }
                }
                if !new.is_empty() {
                    progress = Some(QueryProgress::FoundProviders(new));
                }
                if limit.is_some_and(|l| providers.len() >= l) {
                    finish = true;
                }
                ok
            }
            (
                QueryState::PutValue {
                    record,
                    phase: PutPhase::Store { pending, successes },
                    ..
                },
                response,
            ) => {
                *pending = pending.saturating_sub(1);
                match response {
                    KadResponse::PutValue { record: echo }
                        if echo.key == record.key && echo.value == record.value =>
                    {
                        *successes += 1;
                        true
                    }
                    _ => false,
                }
            }
            (state, response) => {
                tracing::debug!(%from, response = ?response.message_type(), "unexpected response type");
                if let Some(iter) = match state {
                    QueryState::FindNode { iter, .. }
                    | QueryState::GetValue { iter, .. }
                    | QueryState::AddProvider { iter, .. }
                    | QueryState::GetProviders { iter, .. } => Some(iter),
                    QueryState::PutValue {
                        phase: PutPhase::FindPeers(iter),
                        ..
                    } => Some(iter),
                    QueryState::Bootstrap {
                        phase: BootstrapPhase::SelfLookup(iter),
                        ..
                    } => Some(iter),
                    _ => None,
                } {
                    iter.on_failure(&from);
                }
                false
            }
        };
        if ok {
            q.stats.successes += 1;
        } else {
            q.stats.failures += 1;
        }
        if let Some(progress) = progress {
            self.outputs
                .push_back(KadOutput::Event(KadEvent::QueryProgress { id, progress }));
        }
        if finish {
            self.finish_query(id, false, now);
        } else {
            self.mark_dirty(id);
        }
    }

    // ----- commands ----------------------------------------------------------------------

    fn new_query(
        &mut self,
        origin: QueryOrigin,
        parent: Option<QueryId>,
        state: QueryState,
        now: Instant,
    ) -> QueryId {
        let id = QueryId(self.next_query_id);
        self.next_query_id += 1;
        let deadline = now + self.config.query_timeout;
        self.query_deadlines.insert((deadline, id));
        self.queries.insert(
            id,
            Query {
                origin,
                parent,
                state,
                stats: QueryStats::new(now),
                deadline: Some(deadline),
                dirty: false,
            },
        );
        self.mark_dirty(id);
        id
    }

    fn lookup(&self, target: &Key) -> ClosestPeersIter {
        let seeds = self
            .table
            .closest(target, self.config.k)
            .map(|n| (n.peer, n.addrs.clone()));
        ClosestPeersIter::new(*target, self.config.k, self.config.alpha, seeds)
            .with_retries(self.config.lookup_retries)
    }

    /// Looks up the `k` peers closest to `key` (any bytes; usually a peer id).
    pub fn find_node(&mut self, key: Vec<u8>, now: Instant) -> QueryId {
        let iter = self.lookup(&Key::from_bytes(&key));
        self.new_query(
            QueryOrigin::User,
            None,
            QueryState::FindNode { key, iter },
            now,
        )
    }

    /// Looks up the record under `key`, stopping once `quorum` (at least 1) records were
    /// received. A record in the local store counts as one.
    pub fn get_value(&mut self, key: RecordKey, quorum: usize, now: Instant) -> QueryId {
        let quorum = quorum.max(1);
        let mut records = Vec::new();
        if let Some(r) = self.records.get_stored(&key, now) {
            records.push(PeerRecord {
                peer: None,
                record: r.to_record(now),
            });
        }
        let iter = self.lookup(&Key::from_bytes(key.as_bytes()));
        let done = records.len() >= quorum;
        let id = self.new_query(
            QueryOrigin::User,
            None,
            QueryState::GetValue {
                key,
                quorum,
                iter,
                records,
                without: HashSet::new(),
                record_hops: 0,
            },
            now,
        );
        if done {
            self.finish_query(id, false, now);
        }
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
    /// [`KadConfig::max_message_size`] could carry it (it could be neither sent nor served).
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
        Ok(self.start_put(record, quorum, QueryOrigin::User, now))
    }

    fn start_put(
        &mut self,
        record: Record,
        quorum: usize,
        origin: QueryOrigin,
        now: Instant,
    ) -> QueryId {
        let iter = self.lookup(&Key::from_bytes(record.key.as_bytes()));
        let state = QueryState::PutValue {
            record,
            quorum: quorum.max(1),
            phase: PutPhase::FindPeers(iter),
        };
        self.new_query(origin, None, state, now)
    }

    /// Announces the local node as a provider of `key`: stores it locally (re-announced
    /// periodically), then sends ADD_PROVIDER to the `k` peers closest to `key`.
    pub fn start_providing(&mut self, key: RecordKey, now: Instant) -> Result<QueryId, StoreError> {
        let me = KadPeer::new(self.local, self.external_addrs.clone());
        self.providers.add(key.clone(), me, now)?;
        self.providers.start_providing(key.clone(), now);
        Ok(self.start_add_provider(key, QueryOrigin::User, now))
    }

    fn start_add_provider(&mut self, key: RecordKey, origin: QueryOrigin, now: Instant) -> QueryId {
        let iter = self.lookup(&Key::from_bytes(key.as_bytes()));
        self.new_query(origin, None, QueryState::AddProvider { key, iter }, now)
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
        let done = limit.is_some_and(|l| providers.len() >= l);
        let iter = self.lookup(&Key::from_bytes(key.as_bytes()));
        let id = self.new_query(
            QueryOrigin::User,
            None,
            QueryState::GetProviders {
                key,
                limit,
                iter,
                providers,
            },
            now,
        );
        if done {
            self.finish_query(id, false, now);
        }
        id
    }

    /// Refreshes the routing table: a lookup of the local key, then one lookup of a random key
    /// in every bucket from the one holding the self lookup's `k`-th closest peer outwards
    /// (rust-libp2p starts at the closest non-empty bucket; the buckets in between hold only
    /// peers closer than the `k`-th closest, which the self lookup already found). Starts the
    /// periodic bootstrap ([`KadConfig::bootstrap_interval`]). If a bootstrap is running,
    /// returns its id.
    pub fn bootstrap(&mut self, now: Instant) -> Result<QueryId, QueryError> {
        if let Some(interval) = self.config.bootstrap_interval {
            self.next_bootstrap = Some(now + interval);
        }
        self.start_bootstrap(QueryOrigin::User, now)
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
        let state = QueryState::Bootstrap {
            phase: BootstrapPhase::SelfLookup(iter),
            lookups: 1,
        };
        let id = self.new_query(origin, None, state, now);
        self.running_bootstrap = Some(id);
        Ok(id)
    }

    /// Stops query `id` now; it finishes with what it has (a [`KadEvent::QueryFinished`] is
    /// emitted). Returns `false` for an unknown id.
    pub fn finish(&mut self, id: QueryId, now: Instant) -> bool {
        if self.queries.contains_key(&id) {
            self.finish_query(id, false, now);
            true
        } else {
            false
        }
    }

    // ----- driving -----------------------------------------------------------------------

    /// The next thing to do, or `None` when there is nothing until new input or
    /// [`KadCore::next_timeout`].
    pub fn poll(&mut self, now: Instant) -> Option<KadOutput> {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                return Some(out);
            }
            if !self.step(now) {
                return None;
            }
        }
    }

    /// When [`KadCore::poll`] must be called again at the latest, if ever.
    pub fn next_timeout(&self) -> Option<Instant> {
        [
            self.request_deadlines.first().map(|(t, _)| *t),
            self.query_deadlines.first().map(|(t, _)| *t),
            self.next_bootstrap,
            self.next_job_tick,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs timers and drives queries; returns whether anything happened.
    fn step(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        if self.next_job_tick.is_none() {
            self.next_job_tick = Some(now + JOB_TICK);
        }
        // Request timeouts.
        while let Some(&(t, id)) = self.request_deadlines.first() {
            if t > now {
                break;
            }
            progressed = true;
            if let Some(out) = self.take_request(id) {
                tracing::trace!(%id, peer = %out.peer, "request timed out");
                self.fail_request(out, true, now);
            }
        }
        // Query timeouts.
        while let Some(&(t, id)) = self.query_deadlines.first() {
            if t > now {
                break;
            }
            progressed = true;
            self.query_deadlines.remove(&(t, id));
            if self.queries.contains_key(&id) {
                self.finish_query(id, true, now);
            }
        }
        // Periodic bootstrap.
        if let Some(t) = self.next_bootstrap {
            if t <= now {
                progressed = true;
                self.next_bootstrap = self.config.bootstrap_interval.map(|i| now + i);
                if self.start_bootstrap(QueryOrigin::Bootstrap, now).is_err() {
                    tracing::debug!("periodic bootstrap skipped: routing table empty");
                }
            }
        }
        // Store jobs.
        if let Some(t) = self.next_job_tick {
            if t <= now {
                progressed = true;
                self.next_job_tick = Some(now + JOB_TICK);
                self.run_jobs(now);
            }
        }
        // Drive queries that changed.
        let dirty = std::mem::take(&mut self.dirty);
        for id in dirty {
            progressed = true;
            self.drive_query(id, now);
        }
        progressed
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

    fn mark_dirty(&mut self, id: QueryId) {
        if let Some(q) = self.queries.get_mut(&id) {
            if !q.dirty {
                q.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn drive_query(&mut self, id: QueryId, now: Instant) {
        let local = self.local;
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        q.dirty = false;
        if matches!(
            q.state,
            QueryState::PutValue {
                phase: PutPhase::Store { pending: 0, .. },
                ..
            }
        ) {
            self.finish_query(id, false, now);
            return;
        }
        let request = q.lookup_request(&local);
        let mut contacts = Vec::new();
        let mut finished = false;
        if let (Some(iter), Some(_)) = (q.iter_mut(), request.as_ref()) {
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
        if let Some(request) = request {
            for (peer, addrs) in contacts {
                self.send_request(peer, addrs, request.clone(), RequestKind::Query(id), now);
            }
        }
        if finished {
            self.lookup_finished(id, now);
        }
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: KadRequest,
        kind: RequestKind,
        now: Instant,
    ) {
        let request_id = RequestId(self.next_request_id);
        self.next_request_id += 1;
        if request.expects_response() {
            let deadline = now + self.config.request_timeout;
            self.requests.insert(
                request_id,
                Outstanding {
                    peer,
                    kind,
                    deadline,
                },
            );
            self.request_deadlines.insert((deadline, request_id));
        }
        self.outputs.push_back(KadOutput::SendRequest {
            request_id,
            peer,
            addrs,
            request,
        });
    }

    /// The lookup of query `id` finished: move to the next phase or finish the query.
    fn lookup_finished(&mut self, id: QueryId, now: Instant) {
        enum Next {
            Put {
                record: Record,
                targets: Vec<(PeerId, Vec<Multiaddr>)>,
            },
            AddProvider {
                key: RecordKey,
                targets: Vec<(PeerId, Vec<Multiaddr>)>,
            },
            Refresh {
                first_bucket: Option<usize>,
            },
            Finish,
        }
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let next = match &mut q.state {
            QueryState::PutValue { record, phase, .. } => match phase {
                PutPhase::FindPeers(iter) => {
                    let targets: Vec<_> = iter
                        .result()
                        .iter()
                        .map(|c| (c.peer, c.addrs.clone()))
                        .collect();
                    // The store round is one more sequential round.
                    q.stats.hops = iter.hops() + 1;
                    q.stats.closest_depth = iter.result().first().map(|c| c.depth);
                    q.stats.requests += targets.len() as u32;
                    *phase = PutPhase::Store {
                        pending: targets.len(),
                        successes: 0,
                    };
                    Next::Put {
                        record: record.clone(),
                        targets,
                    }
                }
                PutPhase::Store { .. } => return,
            },
            QueryState::AddProvider { key, iter } => {
                let targets: Vec<_> = iter
                    .result()
                    .iter()
                    .map(|c| (c.peer, c.addrs.clone()))
                    .collect();
                q.stats.requests += targets.len() as u32;
                Next::AddProvider {
                    key: key.clone(),
                    targets,
                }
            }
            QueryState::Bootstrap {
                phase: BootstrapPhase::SelfLookup(iter),
                ..
            } => {
                let result = iter.result();
                q.stats.hops = iter.hops();
                q.stats.closest_depth = result.first().map(|c| c.depth);
                // Every peer in a bucket closer than the k-th closest peer is closer than it, so
                // the self lookup already found them all: refresh from that bucket outwards. If
                // it found fewer than k peers it exhausted the network: nothing to refresh.
                let first_bucket = (result.len() >= self.config.k)
                    .then(|| {
                        result.last().and_then(|c| {
                            self.local_key
                                .distance(&Key::from_peer(&c.peer))
                                .bucket_index()
                        })
                    })
                    .flatten();
                Next::Refresh { first_bucket }
            }
            QueryState::Bootstrap { .. } => return,
            _ => Next::Finish,
        };
        match next {
            Next::Put { record, targets } => {
                let empty = targets.is_empty();
                for (peer, addrs) in targets {
                    let request = KadRequest::PutValue {
                        record: record.clone(),
                    };
                    self.send_request(peer, addrs, request, RequestKind::Query(id), now);
                }
                if empty {
                    self.finish_query(id, false, now);
                }
            }
            Next::AddProvider { key, targets } => {
                let provider = KadPeer::new(self.local, self.external_addrs.clone());
                for (peer, addrs) in targets {
                    let request = KadRequest::AddProvider {
                        key: key.clone(),
                        provider: provider.clone(),
                    };
                    self.send_request(peer, addrs, request, RequestKind::Query(id), now);
                }
                self.finish_query(id, false, now);
            }
            Next::Refresh { first_bucket } => {
                let buckets: Vec<usize> =
                    (first_bucket.unwrap_or(NUM_BUCKETS)..NUM_BUCKETS).collect();
                let Some(q) = self.queries.get_mut(&id) else {
                    return;
                };
                if let QueryState::Bootstrap { phase, lookups } = &mut q.state {
                    *lookups += buckets.len();
                    *phase = BootstrapPhase::Refresh {
                        remaining: buckets.len(),
                    };
                }
                // The refresh lookups have their own timeouts.
                if let Some(d) = q.deadline.take() {
                    self.query_deadlines.remove(&(d, id));
                }
                if buckets.is_empty() {
                    self.finish_query(id, false, now);
                    return;
                }
                for b in buckets {
                    let (key, target) = self.local_key.random_preimage_in_bucket(
                        b,
                        &mut self.rng,
                        MAX_REFRESH_KEY_DRAWS,
                    );
                    let iter = self.lookup(&target);
                    self.new_query(
                        QueryOrigin::Bootstrap,
                        Some(id),
                        QueryState::FindNode { key, iter },
                        now,
                    );
                }
            }
            Next::Finish => self.finish_query(id, false, now),
        }
    }

    /// Finishes query `id` (timed out or not) and reports it.
    fn finish_query(&mut self, id: QueryId, timed_out: bool, now: Instant) {
        let ending = if timed_out {
            Ending::TimedOut
        } else {
            Ending::Done
        };
        self.end_query(id, ending, now);
    }

    /// Ends query `id` and reports it.
    fn end_query(&mut self, id: QueryId, ending: Ending, now: Instant) {
        let Some(mut q) = self.queries.remove(&id) else {
            return;
        };
        if let Some(d) = q.deadline {
            self.query_deadlines.remove(&(d, id));
        }
        q.stats.end = now;
        let timed_out = match ending {
            Ending::Done => false,
            Ending::TimedOut => true,
            Ending::Failed(error) => {
                if matches!(q.state, QueryState::Bootstrap { .. }) {
                    self.running_bootstrap = None;
                }
                let result = q.state.failed(error);
                self.report_finished(id, q.origin, q.parent, q.stats, result, now);
                return;
            }
        };
        let result = match q.state {
            QueryState::FindNode { key, mut iter } => {
                iter.finish();
                q.stats.hops = iter.hops();
                let result = iter.result();
                q.stats.closest_depth = result.first().map(|c| c.depth);
                let peers: Vec<KadPeer> = result
                    .iter()
                    .map(|c| KadPeer::new(c.peer, c.addrs.clone()))
                    .collect();
                QueryResult::FindNode(Ok(FindNodeOk {
                    key,
                    peers,
                    converged: !timed_out,
                }))
            }
            QueryState::GetValue {
                key,
                iter,
                records,
                without,
                record_hops,
                quorum,
            } => {
                let result = iter.result();
                q.stats.hops = if records.len() >= quorum {
                    record_hops
                } else {
                    iter.hops().max(record_hops)
                };
                q.stats.closest_depth = result.first().map(|c| c.depth);
                if records.is_empty() {
                    QueryResult::GetValue(Err(if timed_out {
                        QueryError::Timeout
                    } else {
                        QueryError::NotFound
                    }))
                } else {
                    // Cache at the closest peer that answered without the record.
                    let mut cached_at = None;
                    if self.config.caching {
                        let candidate = iter
                            .candidates()
                            .filter(|c| without.contains(&c.peer))
                            .map(|c| (c.peer, c.addrs.clone()))
                            .next();
                        if let (Some((peer, addrs)), Some(pr)) = (candidate, records.first()) {
                            let mut record = pr.record.clone();
                            record.ttl = record.ttl.or(Some(self.config.store.record_ttl));
                            if record.max_message_len() <= self.config.max_message_size {
                                self.send_request(
                                    peer,
                                    addrs,
                                    KadRequest::PutValue { record },
                                    RequestKind::Cache,
                                    now,
                                );
                                cached_at = Some(peer);
                            }
                        }
                    }
                    QueryResult::GetValue(Ok(GetValueOk {
                        key,
                        records,
                        cached_at,
                    }))
                }
            }
            QueryState::PutValue {
                record,
                quorum,
                phase,
            } => {
                let successes = match phase {
                    PutPhase::Store { successes, .. } => successes,
                    PutPhase::FindPeers(_) => 0,
                };
                if successes >= quorum {
                    QueryResult::PutValue(Ok(PutValueOk {
                        key: record.key,
                        successes,
                    }))
                } else if timed_out {
                    QueryResult::PutValue(Err(QueryError::Timeout))
                } else {
                    QueryResult::PutValue(Err(QueryError::QuorumFailed { successes, quorum }))
                }
            }
            QueryState::AddProvider { key, iter } => {
                q.stats.hops = iter.hops();
                q.stats.closest_depth = iter.result().first().map(|c| c.depth);
                if timed_out {
                    QueryResult::StartProviding(Err(QueryError::Timeout))
                } else {
                    QueryResult::StartProviding(Ok(AddProviderOk {
                        key,
                        peers: iter.result().len(),
                    }))
                }
            }
            QueryState::GetProviders {
                key,
                iter,
                providers,
                limit,
            } => {
                let limited = limit.is_some_and(|l| providers.len() >= l);
                q.stats.hops = iter.hops();
                q.stats.closest_depth = iter.result().first().map(|c| c.depth);
                if timed_out && !limited && providers.is_empty() {
                    QueryResult::GetProviders(Err(QueryError::Timeout))
                } else {
                    QueryResult::GetProviders(Ok(GetProvidersOk { key, providers }))
                }
            }
            QueryState::Bootstrap { lookups, phase } => {
                self.running_bootstrap = None;
                if timed_out && matches!(phase, BootstrapPhase::SelfLookup(_)) {
                    QueryResult::Bootstrap(Err(QueryError::Timeout))
                } else {
                    QueryResult::Bootstrap(Ok(BootstrapOk {
                        lookups,
                        table_size: self.table.len(),
                    }))
                }
            }
        };
        self.report_finished(id, q.origin, q.parent, q.stats, result, now);
    }

    /// Reports a finished query: to its parent bootstrap for its refresh lookups, else as a
    /// [`KadEvent::QueryFinished`].
    fn report_finished(
        &mut self,
        id: QueryId,
        origin: QueryOrigin,
        parent: Option<QueryId>,
        stats: QueryStats,
        result: QueryResult,
        now: Instant,
    ) {
        // Refresh lookups of a bootstrap report to it.
        if let Some(parent) = parent {
            let mut done = false;
            if let Some(p) = self.queries.get_mut(&parent) {
                p.stats.absorb(&stats);
                if let QueryState::Bootstrap {
                    phase: BootstrapPhase::Refresh { remaining },
                    ..
                } = &mut p.state
                {
                    *remaining = remaining.saturating_sub(1);
                    done = *remaining == 0;
                }
            }
            if done {
                self.finish_query(parent, false, now);
            }
            return;
        }
        tracing::debug!(%id, requests = stats.requests, hops = stats.hops, "query finished");
        self.outputs
            .push_back(KadOutput::Event(KadEvent::QueryFinished {
                id,
                origin,
                result,
                stats,
            }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kbucket::Key;
    use crate::protocol::KadCodec;
    use meshwire_core::Keypair;

    fn peer(n: u64) -> PeerId {
        Keypair::from_seed_for_tests(n).peer_id()
    }

    fn addr(n: u64) -> Multiaddr {
        format!("/memory/{n}").parse().unwrap()
    }

    /// Cores wired together with instant, lossless delivery.
    struct Net {
        cores: Vec<KadCore>,
        ids: Vec<PeerId>,
        events: Vec<(usize, KadEvent)>,
    }

    impl Net {
        fn new(n: u64, config: KadConfig) -> Self {
            let ids: Vec<_> = (0..n).map(peer).collect();
            let cores = ids
                .iter()
                .zip(0..)
                .map(|(id, s)| KadCore::with_seed(*id, config.clone(), s))
                .collect();
            Net {
                cores,
                ids,
                events: Vec::new(),
            }
        }

        fn link(&mut self, a: usize, b: usize, now: Instant) {
            let (id, ad) = (self.ids[b], addr(b as u64));
            self.cores[a].add_address(id, ad, now);
        }

        fn run(&mut self, now: Instant) {
            loop {
                let mut busy = false;
                for i in 0..self.cores.len() {
                    while let Some(out) = self.cores[i].poll(now) {
                        busy = true;
                        match out {
                            KadOutput::SendRequest {
                                request_id,
                                peer,
                                request,
                                ..
                            } => {
                                let j = self.ids.iter().position(|p| *p == peer).unwrap();
                                // Identify tells the server that the requester serves the DHT.
                                let (me, my_addr) = (self.ids[i], addr(i as u64));
                                if self.cores[i].mode() == Mode::Server {
                                    self.cores[j].add_address(me, my_addr, now);
                                }
                                let expects = request.expects_response();
                                match self.cores[j].handle_request(self.ids[i], request, now) {
                                    Some(r) => self.cores[i].on_response(
                                        request_id,
                                        peer,
                                        Some(addr(j as u64)),
                                        r,
                                        now,
                                    ),
                                    None if expects => {
                                        self.cores[i].on_request_failed(request_id, now)
                                    }
                                    None => {}
                                }
                            }
                            KadOutput::Event(e) => self.events.push((i, e)),
                        }
                    }
                }
                if !busy {
                    return;
                }
            }
        }

        fn result(&self, node: usize, query: QueryId) -> Option<(&QueryResult, &QueryStats)> {
            self.events.iter().find_map(|(n, e)| match e {
                KadEvent::QueryFinished {
                    id, result, stats, ..
                } if *n == node && *id == query => Some((result, stats)),
                _ => None,
            })
        }
    }

    fn drain(core: &mut KadCore, now: Instant) -> Vec<KadOutput> {
        std::iter::from_fn(|| core.poll(now)).collect()
    }

    fn sends(outs: &[KadOutput]) -> Vec<(RequestId, PeerId, KadRequest)> {
        outs.iter()
            .filter_map(|o| match o {
                KadOutput::SendRequest {
                    request_id,
                    peer,
                    request,
                    ..
                } => Some((*request_id, *peer, request.clone())),
                _ => None,
            })
            .collect()
    }

    /// Peers that land in `local`'s bucket 255.
    fn far_peers(local: &PeerId, n: usize) -> Vec<u64> {
        let lk = Key::from_peer(local);
        (100..)
            .filter(|s| lk.distance(&Key::from_peer(&peer(*s))).bucket_index() == Some(255))
            .take(n)
            .collect()
    }

    #[test]
    fn server_answers_every_request_type() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        for n in 1..=30 {
            core.add_address(peer(n), addr(n), now);
        }
        let from = peer(5);
        // FIND_NODE: k closest, never the requester.
        let Some(KadResponse::FindNode { closer_peers }) =
            core.handle_request(from, KadRequest::FindNode { key: b"x".to_vec() }, now)
        else {
            panic!()
        };
        assert_eq!(closer_peers.len(), 20);
        assert!(closer_peers
            .iter()
            .all(|p| p.id != from && !p.addrs.is_empty()));
        let target = Key::from_bytes(b"x");
        assert!(closer_peers
            .windows(2)
            .all(|w| Key::from_peer(&w[0].id).distance(&target)
                < Key::from_peer(&w[1].id).distance(&target)));
        // PUT_VALUE stores and echoes; GET_VALUE returns it with a TTL.
        let rec = Record::new("k", b"v".to_vec());
        assert_eq!(
            core.handle_request(
                from,
                KadRequest::PutValue {
                    record: rec.clone()
                },
                now
            ),
            Some(KadResponse::PutValue {
                record: rec.clone()
            })
        );
        let Some(KadResponse::GetValue {
            record: Some(got),
            closer_peers,
        }) = core.handle_request(from, KadRequest::GetValue { key: "k".into() }, now)
        else {
            panic!()
        };
        assert_eq!((got.key, got.value), (rec.key.clone(), rec.value.clone()));
        assert!(got.ttl.is_some());
        assert_eq!(closer_peers.len(), 20);
        // Oversized values are refused (no response).
        let big = Record::new("big", vec![0; 70 * 1024]);
        assert_eq!(
            core.handle_request(from, KadRequest::PutValue { record: big }, now),
            None
        );
        // ADD_PROVIDER only for the sender itself; GET_PROVIDERS returns it.
        let key = RecordKey::from("provided");
        let other = KadPeer::new(peer(6), vec![addr(6)]);
        assert_eq!(
            core.handle_request(
                from,
                KadRequest::AddProvider {
                    key: key.clone(),
                    provider: other
                },
                now
            ),
            None
        );
        let me = KadPeer::new(from, vec![addr(5)]);
        assert_eq!(
            core.handle_request(
                from,
                KadRequest::AddProvider {
                    key: key.clone(),
                    provider: me
                },
                now
            ),
            None
        );
        let Some(KadResponse::GetProviders { provider_peers, .. }) =
            core.handle_request(peer(7), KadRequest::GetProviders { key: key.clone() }, now)
        else {
            panic!()
        };
        assert_eq!(
            provider_peers.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![from]
        );
        assert_eq!(
            core.handle_request(from, KadRequest::Ping, now),
            Some(KadResponse::Pong)
        );
        // Bad provider keys are refused.
        assert_eq!(
            core.handle_request(
                from,
                KadRequest::GetProviders {
                    key: RecordKey::new(vec![])
                },
                now
            ),
            None
        );
        // Every handled request was reported.
        let events = drain(&mut core, now);
        let stored: Vec<_> = events
            .iter()
            .filter_map(|o| match o {
                KadOutput::Event(KadEvent::InboundRequest {
                    request: InboundRequest::AddProvider { result, .. },
                    ..
                }) => Some(result.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(stored, vec![Ok(false), Ok(true)]);
        assert!(events.iter().any(|o| matches!(
            o,
            KadOutput::Event(KadEvent::InboundRequest {
                request: InboundRequest::PutValue {
                    result: Err(StoreError::ValueTooLarge(_)),
                    ..
                },
                ..
            })
        )));
        // Every response survives the wire codec.
        let codec = KadCodec::default();
        let resp = core
            .handle_request(from, KadRequest::FindNode { key: b"x".to_vec() }, now)
            .unwrap();
        let bytes = codec.encode_response(&resp).unwrap();
        assert_eq!(codec.decode_response(&bytes).unwrap().unwrap().0, resp);
    }

    #[test]
    fn client_mode_answers_nothing() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(
            peer(0),
            KadConfig {
                mode: Mode::Client,
                ..KadConfig::default()
            },
            0,
        );
        assert_eq!(core.handle_request(peer(1), KadRequest::Ping, now), None);
        core.set_mode(Mode::Server);
        assert_eq!(
            drain(&mut core, now),
            vec![KadOutput::Event(KadEvent::ModeChanged {
                mode: Mode::Server
            })]
        );
        assert_eq!(
            core.handle_request(peer(1), KadRequest::Ping, now),
            Some(KadResponse::Pong)
        );
        core.set_mode(Mode::Server);
        assert!(drain(&mut core, now)
            .iter()
            .all(|o| !matches!(o, KadOutput::Event(KadEvent::ModeChanged { .. }))));
    }

    /// A core with k = 2 whose bucket 255 holds two peers; a third candidate arrives.
    fn full_bucket() -> (KadCore, Vec<u64>, RequestId, Instant) {
        let now = Instant::now();
        let me = peer(0);
        let mut core = KadCore::with_seed(
            me,
            KadConfig {
                k: 2,
                ..KadConfig::default()
            },
            0,
        );
        let far = far_peers(&me, 3);
        core.add_address(peer(far[0]), addr(far[0]), now);
        core.add_address(peer(far[1]), addr(far[1]), now);
        drain(&mut core, now);
        core.add_address(peer(far[2]), addr(far[2]), now);
        let outs = drain(&mut core, now);
        let s = sends(&outs);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].1, &s[0].2),
            (peer(far[0]), &KadRequest::Ping),
            "the least recently seen is pinged"
        );
        (core, far, s[0].0, now)
    }

    #[test]
    fn ping_before_evict_keeps_a_live_peer() {
        let (mut core, far, ping, now) = full_bucket();
        core.on_response(ping, peer(far[0]), None, KadResponse::Pong, now);
        let t = core.routing_table();
        assert!(
            t.contains(&peer(far[0])) && t.contains(&peer(far[1])) && !t.contains(&peer(far[2]))
        );
        let order: Vec<_> = t
            .bucket(255)
            .unwrap()
            .nodes()
            .iter()
            .map(|n| n.peer)
            .collect();
        assert_eq!(
            order,
            vec![peer(far[1]), peer(far[0])],
            "the live peer moved to the tail"
        );
    }

    #[test]
    fn ping_before_evict_replaces_a_dead_peer() {
        let (mut core, far, ping, now) = full_bucket();
        core.on_request_failed(ping, now);
        let t = core.routing_table();
        assert!(!t.contains(&peer(far[0])) && t.contains(&peer(far[2])));
        let outs = drain(&mut core, now);
        assert!(outs.contains(&KadOutput::Event(KadEvent::RoutingUpdated {
            peer: peer(far[2]),
            addresses: vec![addr(far[2])],
            bucket: 255,
            is_new_peer: true,
            evicted: Some(peer(far[0])),
        })));
    }

    #[test]
    fn ping_timeout_evicts_too() {
        let (mut core, far, _ping, now) = full_bucket();
        let deadline = core.next_timeout().unwrap();
        assert_eq!(deadline, now + Duration::from_secs(10));
        drain(&mut core, deadline);
        assert!(!core.routing_table().contains(&peer(far[0])));
        assert!(core.routing_table().contains(&peer(far[2])));
    }

    #[test]
    fn request_timeout_fails_the_peer_and_the_lookup_ends() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        core.add_address(peer(1), addr(1), now);
        let q = core.find_node(b"t".to_vec(), now);
        let s = sends(&drain(&mut core, now));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].1, peer(1));
        let at = core.next_timeout().unwrap();
        assert_eq!(at, now + Duration::from_secs(10));
        assert!(drain(&mut core, at - Duration::from_millis(1)).is_empty());
        let outs = drain(&mut core, at);
        let finished = outs.iter().find_map(|o| match o {
            KadOutput::Event(KadEvent::QueryFinished {
                id, result, stats, ..
            }) if *id == q => Some((result, stats)),
            _ => None,
        });
        let (result, stats) = finished.expect("finished");
        assert_eq!(
            result,
            &QueryResult::FindNode(Ok(FindNodeOk {
                key: b"t".to_vec(),
                peers: vec![],
                converged: true
            }))
        );
        assert_eq!((stats.requests, stats.failures), (1, 1));
        // A late response is ignored.
        core.on_response(
            s[0].0,
            peer(1),
            Some(addr(1)),
            KadResponse::FindNode {
                closer_peers: vec![],
            },
            at,
        );
        assert!(drain(&mut core, at).is_empty());
    }

    #[test]
    fn query_timeout_finishes_with_timeout() {
        let now = Instant::now();
        let config = KadConfig {
            query_timeout: Duration::from_secs(3),
            ..KadConfig::default()
        };
        let mut core = KadCore::with_seed(peer(0), config, 0);
        core.add_address(peer(1), addr(1), now);
        let q = core.get_value("k".into(), 1, now);
        drain(&mut core, now);
        assert_eq!(core.next_timeout(), Some(now + Duration::from_secs(3)));
        let outs = drain(&mut core, now + Duration::from_secs(3));
        assert!(outs.iter().any(|o| matches!(o,
            KadOutput::Event(KadEvent::QueryFinished { id, result: QueryResult::GetValue(Err(QueryError::Timeout)), .. })
                if *id == q)));
        assert_eq!(core.num_queries(), 0);
    }

    #[test]
    fn wrong_or_unknown_responders_are_not_trusted() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        core.add_address(peer(1), addr(1), now);
        core.find_node(b"t".to_vec(), now);
        let s = sends(&drain(&mut core, now));
        // A response claiming to come from another peer counts as a failure of the request.
        let fake = vec![KadPeer::new(peer(9), vec![addr(9)])];
        core.on_response(
            s[0].0,
            peer(2),
            Some(addr(2)),
            KadResponse::FindNode { closer_peers: fake },
            now,
        );
        let outs = drain(&mut core, now);
        let KadOutput::Event(KadEvent::QueryFinished {
            result: QueryResult::FindNode(Ok(ok)),
            ..
        }) = &outs[0]
        else {
            panic!("{outs:?}")
        };
        assert!(ok.peers.is_empty());
        assert!(!core.routing_table().contains(&peer(2)));
        core.on_request_failed(RequestId(999), now);
        assert!(drain(&mut core, now).is_empty());
    }

    #[test]
    fn unresponsive_peers_leave_the_table() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(
            peer(0),
            KadConfig {
                max_failures: 2,
                ..KadConfig::default()
            },
            0,
        );
        core.add_address(peer(1), addr(1), now);
        drain(&mut core, now);
        for round in 0..2 {
            core.find_node(vec![round], now);
            let s = sends(&drain(&mut core, now));
            core.on_request_failed(s[0].0, now);
        }
        assert!(!core.routing_table().contains(&peer(1)));
        let outs = drain(&mut core, now);
        assert!(outs.iter().any(|o| matches!(
            o,
            KadOutput::Event(KadEvent::PeerRemoved {
                reason: RemovalReason::Unresponsive,
                ..
            })
        )));
    }

    #[test]
    fn bootstrap_needs_a_peer_and_fills_tables() {
        let now = Instant::now();
        let mut lonely = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        assert_eq!(lonely.bootstrap(now), Err(QueryError::NoKnownPeers));

        let mut net = Net::new(30, KadConfig::default());
        let mut queries = Vec::new();
        for i in 1..30 {
            net.link(i, 0, now);
            queries.push((i, net.cores[i].bootstrap(now).unwrap()));
            net.run(now);
        }
        for (i, q) in queries {
            let (result, stats) = net.result(i, q).expect("bootstrap finished");
            let QueryResult::Bootstrap(Ok(ok)) = result else {
                panic!("{result:?}")
            };
            assert!(ok.lookups >= 1 && stats.requests > 0);
        }
        // The nodes joined one after another: the last one learned everyone through its
        // lookups, and the first ones learned the later ones from their requests.
        assert_eq!(net.cores[29].routing_table().len(), 29);
        assert_eq!(net.cores[1].routing_table().len(), 29);
        // The periodic bootstrap is scheduled.
        assert!(net.cores[1].next_timeout().is_some());
    }

    #[test]
    fn lookup_walks_a_chain_of_cores() {
        // Node i knows only node i + 1: finding node 9 from node 0 takes nine rounds.
        let now = Instant::now();
        let mut net = Net::new(10, KadConfig::default());
        for i in 0..9 {
            net.link(i, i + 1, now);
        }
        let target = net.ids[9].to_bytes();
        let q = net.cores[0].find_node(target, now);
        net.run(now);
        let (QueryResult::FindNode(Ok(ok)), stats) = net.result(0, q).unwrap() else {
            panic!()
        };
        assert_eq!(ok.peers[0].id, net.ids[9]);
        assert_eq!(ok.peers.len(), 9);
        assert_eq!(stats.hops, 9);
        assert_eq!(stats.closest_depth, Some(8));
    }

    #[test]
    fn put_get_with_caching_and_providers() {
        let now = Instant::now();
        let mut net = Net::new(
            40,
            KadConfig {
                k: 5,
                ..KadConfig::default()
            },
        );
        for i in 1..40 {
            net.link(i, 0, now);
            net.cores[i].bootstrap(now).unwrap();
            net.run(now);
        }
        // PUT at the 5 closest.
        let rec = Record::new("key", b"value".to_vec());
        let q = net.cores[3].put_value(rec.clone(), 3, now).unwrap();
        net.run(now);
        let (QueryResult::PutValue(Ok(ok)), stats) = net.result(3, q).unwrap() else {
            panic!("{:?}", net.result(3, q))
        };
        assert_eq!(ok.successes, 5);
        assert!(stats.hops >= 2, "lookup round(s) plus the store round");
        let holders: Vec<_> = (0..40)
            .filter(|&i| net.cores[i].record_store().get(&rec.key, now).is_some())
            .collect();
        assert_eq!(holders.len(), 6, "the 5 closest and the publisher");
        // GET from a node that does not hold it; the record gets cached at the closest peer
        // that answered without it.
        let getter = (0..40).find(|i| !holders.contains(i)).unwrap();
        let q = net.cores[getter].get_value(rec.key.clone(), 1, now);
        net.run(now);
        let (QueryResult::GetValue(Ok(ok)), _) = net.result(getter, q).unwrap() else {
            panic!()
        };
        assert_eq!(ok.records[0].record.value, rec.value);
        if let Some(cached) = ok.cached_at {
            let i = net.ids.iter().position(|p| *p == cached).unwrap();
            assert!(net.cores[i].record_store().get(&rec.key, now).is_some());
        }
        // A missing record is NotFound.
        let q = net.cores[getter].get_value("nope".into(), 1, now);
        net.run(now);
        assert_eq!(
            net.result(getter, q).unwrap().0,
            &QueryResult::GetValue(Err(QueryError::NotFound))
        );
        // Providers.
        net.cores[7].set_external_addresses(vec![addr(7)]);
        let key = RecordKey::from("content");
        let q = net.cores[7].start_providing(key.clone(), now).unwrap();
        net.run(now);
        let (QueryResult::StartProviding(Ok(ok)), _) = net.result(7, q).unwrap() else {
            panic!()
        };
        assert_eq!(ok.peers, 5);
        let q = net.cores[20].get_providers(key.clone(), None, now);
        net.run(now);
        let (QueryResult::GetProviders(Ok(ok)), _) = net.result(20, q).unwrap() else {
            panic!()
        };
        assert_eq!(ok.providers, vec![KadPeer::new(net.ids[7], vec![addr(7)])]);
    }

    /// An IP address of someone else, listed for a real peer by a malicious one.
    fn victim(n: u16) -> Multiaddr {
        format!("/ip4/192.0.2.{}/udp/{n}/quic-v1", n % 250)
            .parse()
            .unwrap()
    }

    #[test]
    fn third_party_addresses_are_never_recorded() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        let (liar, real) = (peer(1), peer(2));
        core.add_address(liar, addr(1), now);
        // `real` is known at its real address already.
        core.add_address(real, addr(2), now);
        drain(&mut core, now);
        let q = core.find_node(real.to_bytes(), now);
        let s = sends(&drain(&mut core, now));
        let to_liar = s.iter().find(|(_, p, _)| *p == liar).unwrap().0;
        let to_real = s.iter().find(|(_, p, _)| *p == real).unwrap().0;
        // The liar lists `real` (and a new peer) at eight victim addresses.
        let victims: Vec<Multiaddr> = (1..=8).map(victim).collect();
        let lies = vec![
            KadPeer::new(real, victims.clone()),
            KadPeer::new(peer(3), victims.clone()),
        ];
        core.on_response(
            to_liar,
            liar,
            Some(addr(1)),
            KadResponse::FindNode { closer_peers: lies },
            now,
        );
        core.on_response(
            to_real,
            real,
            Some(addr(2)),
            KadResponse::FindNode {
                closer_peers: vec![],
            },
            now,
        );
        // peer 3 is contacted at the addresses we were given (they are all we have)...
        let outs = drain(&mut core, now);
        let to_3 = outs
            .iter()
            .find_map(|o| match o {
                KadOutput::SendRequest {
                    request_id,
                    peer: p,
                    addrs,
                    ..
                } if *p == peer(3) => Some((*request_id, addrs.clone())),
                _ => None,
            })
            .expect("peer 3 is asked");
        assert_eq!(to_3.1, victims, "third-party addresses are for dialing");
        // ... and answers over the connection we dialed at its real address.
        core.on_response(
            to_3.0,
            peer(3),
            Some(addr(3)),
            KadResponse::FindNode {
                closer_peers: vec![],
            },
            now,
        );
        let outs = drain(&mut core, now);
        assert!(outs.iter().any(|o| matches!(o,
            KadOutput::Event(KadEvent::QueryFinished { id, .. }) if *id == q)));
        // Only first-hand addresses are in the table...
        let t = core.routing_table();
        assert_eq!(t.get(&real).unwrap().addrs, vec![addr(2)]);
        assert_eq!(t.get(&peer(3)).unwrap().addrs, vec![addr(3)]);
        // ... and in what we tell others.
        let Some(KadResponse::FindNode { closer_peers }) = core.handle_request(
            peer(9),
            KadRequest::FindNode {
                key: real.to_bytes(),
            },
            now,
        ) else {
            panic!()
        };
        for p in &closer_peers {
            assert!(p.addrs.iter().all(|a| !victims.contains(a)), "{p:?}");
        }
        assert!(closer_peers
            .iter()
            .any(|p| p.id == real && p.addrs == vec![addr(2)]));
    }

    #[test]
    fn a_response_without_a_dialed_address_adds_nobody() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        core.add_address(peer(1), addr(1), now);
        core.find_node(b"t".to_vec(), now);
        let s = sends(&drain(&mut core, now));
        core.on_response(
            s[0].0,
            peer(1),
            None,
            KadResponse::FindNode {
                closer_peers: vec![KadPeer::new(peer(2), vec![addr(2)])],
            },
            now,
        );
        let s = sends(&drain(&mut core, now));
        // Peer 2 answered over a connection it dialed: it is not added from the response.
        core.on_response(
            s[0].0,
            peer(2),
            None,
            KadResponse::FindNode {
                closer_peers: vec![],
            },
            now,
        );
        drain(&mut core, now);
        assert!(!core.routing_table().contains(&peer(2)));
        assert_eq!(
            core.routing_table().get(&peer(1)).unwrap().addrs,
            vec![addr(1)]
        );
    }

    #[test]
    fn records_no_message_can_carry_are_refused() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        core.add_address(peer(1), addr(1), now);
        drain(&mut core, now);
        // Within the store's 65 KiB, beyond the 16 KiB message bound.
        let big = Record::new("big", vec![0; 20 * 1024]);
        let Err(StoreError::RecordTooLarge { len, max }) = core.put_value(big.clone(), 1, now)
        else {
            panic!("accepted a record that cannot be sent")
        };
        assert!(len > max && max == DEFAULT_MAX_MESSAGE_SIZE);
        assert!(core.record_store().is_empty());
        assert!(drain(&mut core, now)
            .iter()
            .all(|o| !matches!(o, KadOutput::SendRequest { .. })));
        // A remote's record that could not be served back is refused too.
        let mut edge = Record::new("edge", vec![1; DEFAULT_MAX_MESSAGE_SIZE - 100]);
        let mut over = edge.clone();
        over.value.push(1);
        while over.max_message_len() <= DEFAULT_MAX_MESSAGE_SIZE {
            edge.value.push(1);
            over.value.push(1);
        }
        assert_eq!(
            core.handle_request(peer(1), KadRequest::PutValue { record: over }, now),
            None
        );
        let outs = drain(&mut core, now);
        assert!(outs.iter().any(|o| matches!(
            o,
            KadOutput::Event(KadEvent::InboundRequest {
                request: InboundRequest::PutValue {
                    result: Err(StoreError::RecordTooLarge { .. }),
                    ..
                },
                ..
            })
        )));
        // The largest record accepted is served back within the bound, closer peers trimmed.
        for n in 2..=30 {
            let long: Multiaddr = format!("/dns4/{}/udp/{n}/quic-v1", "h".repeat(200))
                .parse()
                .unwrap();
            core.add_address(peer(n), long, now);
        }
        assert!(core
            .handle_request(peer(1), KadRequest::PutValue { record: edge }, now)
            .is_some());
        let resp = core
            .handle_request(peer(2), KadRequest::GetValue { key: "edge".into() }, now)
            .unwrap();
        assert!(KadCodec::default().encode_response(&resp).is_ok());
        assert!(matches!(
            resp,
            KadResponse::GetValue {
                record: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn an_unsendable_request_fails_its_query_not_the_peer() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(
            peer(0),
            KadConfig {
                max_failures: 1,
                ..KadConfig::default()
            },
            0,
        );
        core.add_address(peer(1), addr(1), now);
        drain(&mut core, now);
        let q = core.find_node(vec![0; 32], now);
        let s = sends(&drain(&mut core, now));
        let error = ProtocolError::MessageTooLarge { len: 1, max: 0 };
        core.on_request_unsendable(s[0].0, error.clone(), now);
        let outs = drain(&mut core, now);
        assert!(outs.iter().any(|o| matches!(o,
            KadOutput::Event(KadEvent::QueryFinished { id, result: QueryResult::FindNode(Err(QueryError::Unsendable(e))), .. })
                if *id == q && *e == error)), "{outs:?}");
        assert!(core.routing_table().contains(&peer(1)));
        assert_eq!(core.routing_table().get(&peer(1)).unwrap().failures, 0);
        assert_eq!(core.num_queries(), 0);
    }

    #[test]
    fn provider_responses_fit_in_a_message() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        let long = |tag: &str, i: u64| -> Multiaddr {
            format!("/dns4/{tag}{i}{}/udp/4001/quic-v1", "x".repeat(200))
                .parse()
                .unwrap()
        };
        // Twenty table peers with eight long addresses each.
        for n in 1..=20 {
            for i in 0..8 {
                core.add_address(peer(n), long("t", i), now);
            }
        }
        // Two providers announcing 40 long addresses (about 10 KiB) each.
        let key = RecordKey::from("content");
        for p in [peer(31), peer(32)] {
            let addrs: Vec<Multiaddr> = (0..40).map(|i| long("p", i)).collect();
            assert_eq!(
                core.handle_request(
                    p,
                    KadRequest::AddProvider {
                        key: key.clone(),
                        provider: KadPeer::new(p, addrs)
                    },
                    now
                ),
                None
            );
        }
        let stored = core.provider_store().get(&key, now);
        assert!(stored.iter().all(|p| p.addrs.len() == 8));
        let resp = core
            .handle_request(peer(5), KadRequest::GetProviders { key: key.clone() }, now)
            .unwrap();
        let bytes = KadCodec::default()
            .encode_response(&resp)
            .expect("the response fits");
        let KadResponse::GetProviders {
            closer_peers,
            provider_peers,
        } = KadCodec::default()
            .decode_response(&bytes)
            .unwrap()
            .unwrap()
            .0
        else {
            panic!()
        };
        assert_eq!(provider_peers.len(), 2, "both providers are returned");
        assert!(!closer_peers.is_empty());
        // The reported count is what was sent.
        let outs = drain(&mut core, now);
        assert!(outs.iter().any(|o| matches!(
            o,
            KadOutput::Event(KadEvent::InboundRequest {
                request: InboundRequest::GetProviders { providers: 2, .. },
                ..
            })
        )));
        // FIND_NODE answers are trimmed the same way.
        let resp = core
            .handle_request(peer(5), KadRequest::FindNode { key: vec![1] }, now)
            .unwrap();
        assert!(KadCodec::default().encode_response(&resp).is_ok());
    }

    #[test]
    fn put_without_peers_fails_quorum_but_stores_locally() {
        let now = Instant::now();
        let mut core = KadCore::with_seed(peer(0), KadConfig::default(), 0);
        let q = core
            .put_value(Record::new("k", b"v".to_vec()), 1, now)
            .unwrap();
        let outs = drain(&mut core, now);
        assert!(outs.iter().any(|o| matches!(o,
            KadOutput::Event(KadEvent::QueryFinished { id, result: QueryResult::PutValue(Err(QueryError::QuorumFailed { successes: 0, quorum: 1 })), .. })
                if *id == q)));
        assert!(core.record_store().get(&"k".into(), now).is_some());
        // A local GET with quorum 1 finishes at once from the local store.
        let q = core.get_value("k".into(), 1, now);
        let outs = drain(&mut core, now);
        assert!(outs.iter().any(|o| matches!(o,
            KadOutput::Event(KadEvent::QueryFinished { id, result: QueryResult::GetValue(Ok(_)), stats, .. })
                if *id == q && stats.requests == 0)));
    }

    #[test]
    fn originated_records_are_republished() {
        let now = Instant::now();
        let store = StoreConfig {
            publication_interval: Some(Duration::from_secs(120)),
            ..StoreConfig::default()
        };
        let mut core = KadCore::with_seed(
            peer(0),
            KadConfig {
                store,
                ..KadConfig::default()
            },
            0,
        );
        core.add_address(peer(1), addr(1), now);
        core.put_value(Record::new("k", b"v".to_vec()), 1, now)
            .unwrap();
        drain(&mut core, now);
        // Jobs are checked every minute; the first check after the interval republishes.
        let mut t = now;
        let mut republished = false;
        for _ in 0..5 {
            t = core.next_timeout().unwrap();
            for o in drain(&mut core, t) {
                if let KadOutput::SendRequest {
                    request_id,
                    peer: p,
                    request: KadRequest::FindNode { .. },
                    ..
                } = o
                {
                    if t > now + Duration::from_secs(100) {
                        republished = true;
                    }
                    core.on_response(
                        request_id,
                        p,
                        None,
                        KadResponse::FindNode {
                            closer_peers: vec![],
                        },
                        t,
                    );
                } else if let KadOutput::SendRequest {
                    request_id,
                    peer: p,
                    request: KadRequest::PutValue { record },
                    ..
                } = o
                {
                    core.on_response(request_id, p, None, KadResponse::PutValue { record }, t);
                }
            }
        }
        assert!(republished, "republished by {:?}", t - now);
    }
}
