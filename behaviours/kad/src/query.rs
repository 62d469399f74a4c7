//! Iterative lookups: the closest-peers iterator every query is built on, and the query
//! identifiers, results and statistics the engine reports.
//!
//! # The lookup
//!
//! [`ClosestPeersIter`] is the Kademlia node lookup of the libp2p spec: it keeps every peer it
//! has heard of, sorted by XOR distance to the target, and asks the closest ones not yet
//! contacted, at most `α` at a time. It terminates when the `k` closest peers it knows have
//! all answered successfully, or when nobody is left to ask. A peer that fails or times out
//! is dropped from the candidates. While the `k` closest known peers are all either answered
//! or still being asked, no farther peer is contacted: their answers may still bring closer
//! peers, and asking farther ones would only cost messages.
//!
//! # Hops
//!
//! Every peer the lookup knows carries a *depth*: 0 for the peers taken from the local routing
//! table, and `d + 1` for a peer first reported by the response of a depth-`d` peer (if a later
//! response reports it through a shorter chain, the smaller depth is kept). Contacting a
//! depth-`d` peer is a request of *round* `d + 1`: round 1 asks peers we knew, round 2 asks
//! peers learned from round-1 answers, and so on; requests of the same round run in parallel
//! and each round needs the answers of the one before. A lookup's **hop count**
//! ([`QueryStats::hops`]) is the number of sequential rounds it needed: the largest round among
//! the requests that produced its result — for a node lookup, the `k` closest peers that
//! answered; for a record lookup that stopped early, the peers that returned the record. It
//! is the latency of the lookup in round trips, whatever the parallelism.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_kad::kbucket::Key;
//! use meshwire_kad::protocol::KadPeer;
//! use meshwire_kad::query::{ClosestPeersIter, IterStep};
//!
//! let peers: Vec<_> = (1..=4).map(|n| Keypair::from_seed_for_tests(n).peer_id()).collect();
//! let target = Key::from_bytes(b"target");
//! // We know peers[0]; it knows the rest.
//! let mut iter = ClosestPeersIter::new(target, 2, 3, [(peers[0], vec![])]);
//! let IterStep::Contact { peer, .. } = iter.next_step() else { panic!() };
//! assert_eq!(peer, peers[0]);
//! let closer: Vec<_> = peers[1..].iter().map(|p| KadPeer::new(*p, vec![])).collect();
//! iter.on_success(&peer, closer, None);
//! // Now the two closest of the four are asked (α = 3 allows both at once).
//! let mut asked = vec![];
//! while let IterStep::Contact { peer, .. } = iter.next_step() {
//!     asked.push(peer);
//! }
//! for p in &asked {
//!     iter.on_success(p, [], None);
//! }
//! assert!(matches!(iter.next_step(), IterStep::Finished));
//! assert_eq!(iter.result().len(), 2);
//! ```

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use multiaddr::Multiaddr;

use crate::kbucket::{Distance, Key};
use crate::protocol::{KadPeer, ProtocolError, Record, RecordKey};

/// Identifies a query of one core.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct QueryId(pub(crate) u64);

impl QueryId {
    /// The number behind the id.
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query#{}", self.0)
    }
}

/// The state of one candidate of a lookup.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PeerState {
    /// Known, not asked yet.
    NotContacted,
    /// Asked, no answer yet.
    Waiting,
    /// Answered.
    Succeeded,
    /// Failed or timed out.
    Failed,
}

/// One peer known to a lookup.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses, as reported.
    pub addrs: Vec<Multiaddr>,
    /// Where the lookup stands with it.
    pub state: PeerState,
    /// Its depth (see the module docs): 0 when it came from the routing table.
    pub depth: u32,
    /// Requests sent to it so far.
    pub attempts: u32,
}

/// What a lookup wants next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IterStep {
    /// Send a request to this peer (it is now marked as waiting).
    Contact {
        /// The peer.
        peer: PeerId,
        /// Its known addresses.
        addrs: Vec<Multiaddr>,
    },
    /// Nothing to send until a response or failure arrives.
    Waiting,
    /// The lookup is over.
    Finished,
}

/// The iterative closest-peers lookup (see the module docs).
#[derive(Clone, Debug)]
pub struct ClosestPeersIter {
    target: Key,
    k: usize,
    alpha: usize,
    peers: BTreeMap<Distance, Candidate>,
    known: HashMap<PeerId, Distance>,
    in_flight: usize,
    max_attempts: u32,
    finished: bool,
}

impl ClosestPeersIter {
    /// A lookup for `target` returning `k` peers with `alpha` requests in flight at most, seeded
    /// with `seeds` (depth 0).
    pub fn new(
        target: Key,
        k: usize,
        alpha: usize,
        seeds: impl IntoIterator<Item = (PeerId, Vec<Multiaddr>)>,
    ) -> Self {
        let mut iter = ClosestPeersIter {
            target,
            k: k.max(1),
            alpha: alpha.max(1),
            peers: BTreeMap::new(),
            known: HashMap::new(),
            in_flight: 0,
            max_attempts: 1,
            finished: false,
        };
        for (peer, addrs) in seeds {
            iter.learn(peer, addrs, 0);
        }
        iter
    }

    /// Lets a peer whose request timed out be asked again, up to `retries` more times, as
    /// long as it still ranks among the `k` closest candidates (default 0: a timeout drops it).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.max_attempts = retries.saturating_add(1);
        self
    }

    /// The target key.
    pub fn target(&self) -> &Key {
        &self.target
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether the lookup is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Every candidate, closest first.
    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.peers.values()
    }

    /// The candidate for `peer`, if known.
    pub fn candidate(&self, peer: &PeerId) -> Option<&Candidate> {
        self.known.get(peer).and_then(|d| self.peers.get(d))
    }

    fn learn(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, depth: u32) {
        match self.known.entry(peer) {
            Entry::Occupied(e) => {
                if let Some(c) = self.peers.get_mut(e.get()) {
                    c.depth = c.depth.min(depth);
                    if c.addrs.is_empty() && !addrs.is_empty() {
                        c.addrs = addrs;
                    }
                }
            }
            Entry::Vacant(e) => {
                let d = Key::from_peer(&peer).distance(&self.target);
                e.insert(d);
                self.peers.insert(
                    d,
                    Candidate {
                        peer,
                        addrs,
                        state: PeerState::NotContacted,
                        depth,
                        attempts: 0,
                    },
                );
            }
        }
    }

    /// The next step: a peer to contact, or wait, or finished.
    pub fn next_step(&mut self) -> IterStep {
        if self.finished {
            return IterStep::Finished;
        }
        let mut succeeded = 0;
        let mut active = 0;
        for c in self.peers.values_mut() {
            if active >= self.k {
                break;
            }
            match c.state {
                PeerState::Succeeded => {
                    succeeded += 1;
                    active += 1;
                }
                PeerState::Waiting => active += 1,
                PeerState::Failed => {}
                PeerState::NotContacted => {
                    if self.in_flight >= self.alpha {
                        return IterStep::Waiting;
                    }
                    c.state = PeerState::Waiting;
                    c.attempts += 1;
                    self.in_flight += 1;
                    return IterStep::Contact {
                        peer: c.peer,
                        addrs: c.addrs.clone(),
                    };
                }
            }
        }
        if succeeded >= self.k || self.in_flight == 0 {
            self.finished = true;
            return IterStep::Finished;
        }
        IterStep::Waiting
    }

    /// `peer` answered with `closer` peers. `local` (our own id) is never added as a candidate.
    /// Returns `false` if no request to `peer` was outstanding.
    pub fn on_success(
        &mut self,
        peer: &PeerId,
        closer: impl IntoIterator<Item = KadPeer>,
        local: Option<&PeerId>,
    ) -> bool {
        let Some(depth) = self.mark(peer, PeerState::Succeeded) else {
            return false;
        };
        for p in closer {
            if Some(&p.id) != local && p.id != *peer {
                self.learn(p.id, p.addrs, depth + 1);
            }
        }
        true
    }

    /// The request to `peer` failed: it is dropped. Returns `false` if none was outstanding.
    pub fn on_failure(&mut self, peer: &PeerId) -> bool {
        self.mark(peer, PeerState::Failed).is_some()
    }

    /// The request to `peer` timed out: it is dropped, or asked again later if it has retries
    /// left ([`ClosestPeersIter::with_retries`]). Returns `false` if none was outstanding.
    pub fn on_timeout(&mut self, peer: &PeerId) -> bool {
        let retry = self
            .candidate(peer)
            .is_some_and(|c| c.attempts < self.max_attempts);
        let state = if retry {
            PeerState::NotContacted
        } else {
            PeerState::Failed
        };
        self.mark(peer, state).is_some()
    }

    fn mark(&mut self, peer: &PeerId, state: PeerState) -> Option<u32> {
        let d = self.known.get(peer)?;
        let c = self.peers.get_mut(d)?;
        if c.state != PeerState::Waiting {
            return None;
        }
        c.state = state;
        self.in_flight -= 1;
        Some(c.depth)
    }

    /// Ends the lookup now (results so far stay available).
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The `k` closest peers that answered, closest first.
    pub fn result(&self) -> Vec<&Candidate> {
        self.peers
            .values()
            .filter(|c| c.state == PeerState::Succeeded)
            .take(self.k)
            .collect()
    }

    /// Hop count of the result (see the module docs): the largest round (`depth + 1`) among the
    /// `k` closest peers that answered, 0 if none did.
    pub fn hops(&self) -> u32 {
        self.result().iter().map(|c| c.depth + 1).max().unwrap_or(0)
    }
}

/// Where a query came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QueryOrigin {
    /// Started through the engine's API.
    User,
    /// A periodic bootstrap (routing table refresh).
    Bootstrap,
    /// Periodic republication of a record or provider announcement of the local node.
    Republish,
    /// Periodic replication of a record stored for others.
    Replicate,
}

/// Statistics of a finished query.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct QueryStats {
    /// Requests sent (each one RPC: one request message, and one response if it succeeds).
    pub requests: u32,
    /// Requests answered.
    pub successes: u32,
    /// Requests failed or timed out.
    pub failures: u32,
    /// Sequential request rounds the result needed (see the module docs).
    pub hops: u32,
    /// Depth of the closest peer of the result: how many rounds of answers it took to first
    /// learn of it (0: it was in the routing table). `None` when the result has no peer.
    pub closest_depth: Option<u32>,
    /// When the query started.
    pub start: Instant,
    /// When it finished.
    pub end: Instant,
}

impl QueryStats {
    pub(crate) fn new(start: Instant) -> Self {
        QueryStats {
            requests: 0,
            successes: 0,
            failures: 0,
            hops: 0,
            closest_depth: None,
            start,
            end: start,
        }
    }

    /// How long the query ran.
    pub fn duration(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }

    pub(crate) fn absorb(&mut self, other: &QueryStats) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.failures += other.failures;
        self.hops = self.hops.max(other.hops);
    }
}

/// Why a query did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The overall query timeout passed first.
    #[error("query timed out")]
    Timeout,
    /// The lookup ended without finding the record.
    #[error("record not found")]
    NotFound,
    /// Fewer peers than the quorum stored the record.
    #[error("quorum failed: {successes} of {quorum} required stores succeeded")]
    QuorumFailed {
        /// Stores that succeeded.
        successes: usize,
        /// Stores required.
        quorum: usize,
    },
    /// The routing table is empty: there is nobody to ask.
    #[error("no known peers")]
    NoKnownPeers,
    /// The query's request cannot be sent (it does not fit in a message): a local problem,
    /// not counted against any peer.
    #[error("request cannot be sent: {0}")]
    Unsendable(ProtocolError),
}

/// A record found by a GET_VALUE lookup, with the peer it came from (`None`: the local store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// Who returned it.
    pub peer: Option<PeerId>,
    /// The record.
    pub record: Record,
}

/// Result of [`crate::KadEngine::find_node`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindNodeOk {
    /// The key looked up.
    pub key: Vec<u8>,
    /// The closest peers that answered, closest first.
    pub peers: Vec<KadPeer>,
    /// `false` when the query timeout ended the lookup before the `k` closest peers it knew
    /// had all answered: `peers` is then the best found so far.
    pub converged: bool,
}

/// Result of [`crate::KadEngine::get_value`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetValueOk {
    /// The key looked up.
    pub key: RecordKey,
    /// The records found (as many as the quorum when it was met, else fewer but at least one).
    pub records: Vec<PeerRecord>,
    /// Peer the record was cached at (the closest peer that answered without it), if any.
    pub cached_at: Option<PeerId>,
}

/// Result of [`crate::KadEngine::put_value`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutValueOk {
    /// The key stored.
    pub key: RecordKey,
    /// Peers that confirmed the store.
    pub successes: usize,
}

/// Result of [`crate::KadEngine::start_providing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddProviderOk {
    /// The key announced.
    pub key: RecordKey,
    /// Peers the announcement was sent to (ADD_PROVIDER has no response).
    pub peers: usize,
}

/// Result of [`crate::KadEngine::get_providers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetProvidersOk {
    /// The key looked up.
    pub key: RecordKey,
    /// The providers found (local store included), deduplicated.
    pub providers: Vec<KadPeer>,
}

/// Result of [`crate::KadEngine::bootstrap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapOk {
    /// Lookups run: the self lookup plus one per refreshed bucket.
    pub lookups: usize,
    /// Peers in the routing table afterwards.
    pub table_size: usize,
}

/// The outcome of a finished query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryResult {
    /// A FIND_NODE lookup (an error only when its request cannot be sent,
    /// [`QueryError::Unsendable`]: a lookup ended by the query timeout returns what it found,
    /// with [`FindNodeOk::converged`] false).
    FindNode(Result<FindNodeOk, QueryError>),
    /// A GET_VALUE lookup.
    GetValue(Result<GetValueOk, QueryError>),
    /// A PUT_VALUE (lookup, then store at the closest peers).
    PutValue(Result<PutValueOk, QueryError>),
    /// An ADD_PROVIDER (lookup, then announce to the closest peers).
    StartProviding(Result<AddProviderOk, QueryError>),
    /// A GET_PROVIDERS lookup.
    GetProviders(Result<GetProvidersOk, QueryError>),
    /// A bootstrap: self lookup and bucket refreshes.
    Bootstrap(Result<BootstrapOk, QueryError>),
}

/// Progress of a running query, reported before it finishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryProgress {
    /// A GET_VALUE lookup received a record.
    FoundRecord(PeerRecord),
    /// A GET_PROVIDERS lookup learned of new providers.
    FoundProviders(Vec<KadPeer>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;
    use std::collections::HashMap as Map;

    fn peer(n: u64) -> PeerId {
        Keypair::from_seed_for_tests(n).peer_id()
    }

    /// A hand-built network: who knows whom. Every peer answers with the 20 peers it knows
    /// closest to the target, like a real server with k = 20 would.
    fn run_lookup(
        knows: &Map<PeerId, Vec<PeerId>>,
        dead: &[PeerId],
        target: Key,
        seeds: Vec<PeerId>,
        k: usize,
        alpha: usize,
    ) -> (Vec<PeerId>, u32, usize) {
        let mut iter =
            ClosestPeersIter::new(target, k, alpha, seeds.into_iter().map(|p| (p, vec![])));
        let mut pending = std::collections::VecDeque::new();
        let mut sent = 0;
        loop {
            loop {
                match iter.next_step() {
                    IterStep::Contact { peer, .. } => {
                        assert!(iter.in_flight() <= alpha);
                        sent += 1;
                        pending.push_back(peer);
                    }
                    IterStep::Waiting => break,
                    IterStep::Finished => {
                        let res = iter.result().iter().map(|c| c.peer).collect();
                        return (res, iter.hops(), sent);
                    }
                }
            }
            let p = pending.pop_front().expect("waiting with nothing in flight");
            if dead.contains(&p) {
                iter.on_failure(&p);
            } else {
                let mut closer: Vec<_> = knows.get(&p).cloned().unwrap_or_default();
                closer.sort_by_key(|q| Key::from_peer(q).distance(&target));
                closer.truncate(20);
                let closer: Vec<_> = closer
                    .into_iter()
                    .map(|q| KadPeer::new(q, vec![]))
                    .collect();
                iter.on_success(&p, closer, None);
            }
        }
    }

    fn sorted_by_distance(ps: &[PeerId], target: &Key) -> Vec<PeerId> {
        let mut v = ps.to_vec();
        v.sort_by_key(|q| Key::from_peer(q).distance(target));
        v
    }

    #[test]
    fn chain_topology_converges_with_one_peer_per_round() {
        // Peer i knows only peer i+1; the lookup must walk the whole chain.
        let ps: Vec<_> = (1..=6).map(peer).collect();
        let mut knows = Map::new();
        for w in ps.windows(2) {
            knows.insert(w[0], vec![w[1]]);
        }
        let target = Key::from_bytes(b"x");
        let (res, hops, sent) = run_lookup(&knows, &[], target, vec![ps[0]], 20, 3);
        assert_eq!(res, sorted_by_distance(&ps, &target));
        assert_eq!(
            hops, 6,
            "each peer is learned one round after the previous one"
        );
        assert_eq!(sent, 6);
    }

    #[test]
    fn full_mesh_terminates_after_k_closest_answered() {
        let ps: Vec<_> = (1..=40).map(peer).collect();
        let knows: Map<_, _> = ps
            .iter()
            .map(|p| (*p, ps.iter().filter(|q| *q != p).copied().collect()))
            .collect();
        let target = Key::from_bytes(b"y");
        let (res, hops, sent) = run_lookup(&knows, &[], target, vec![ps[7]], 5, 3);
        assert_eq!(res, sorted_by_distance(&ps, &target)[..5].to_vec());
        assert_eq!(hops, 2);
        // The seed, then the 5 closest; no farther peer was asked.
        assert!(sent <= 6 + 2, "sent {sent}");
    }

    #[test]
    fn failed_peers_are_skipped_and_next_closest_taken() {
        let ps: Vec<_> = (1..=30).map(peer).collect();
        let knows: Map<_, _> = ps.iter().map(|p| (*p, ps.clone())).collect();
        let target = Key::from_bytes(b"z");
        let order = sorted_by_distance(&ps, &target);
        let dead = vec![order[0], order[2]];
        let (res, _, _) = run_lookup(&knows, &dead, target, vec![order[10]], 4, 2);
        assert_eq!(res, vec![order[1], order[3], order[4], order[5]]);
    }

    #[test]
    fn exhausted_lookup_finishes_with_fewer_than_k() {
        let ps: Vec<_> = (1..=3).map(peer).collect();
        let knows: Map<_, _> = ps.iter().map(|p| (*p, ps.clone())).collect();
        let target = Key::from_bytes(b"w");
        let (res, _, _) = run_lookup(&knows, &[ps[2]], target, vec![ps[0]], 20, 3);
        assert_eq!(res.len(), 2);
        // No seeds at all: finished immediately.
        let mut iter = ClosestPeersIter::new(target, 20, 3, []);
        assert_eq!(iter.next_step(), IterStep::Finished);
        assert!(iter.result().is_empty());
    }

    #[test]
    fn timed_out_peers_are_retried_while_they_matter() {
        let target = Key::from_bytes(b"r");
        let mut iter = ClosestPeersIter::new(target, 1, 1, [(peer(1), vec![])]).with_retries(1);
        let IterStep::Contact { peer: p, .. } = iter.next_step() else {
            panic!()
        };
        assert!(iter.on_timeout(&p));
        let IterStep::Contact { peer: again, .. } = iter.next_step() else {
            panic!("retried")
        };
        assert_eq!(again, p);
        assert!(iter.on_timeout(&p));
        assert_eq!(iter.next_step(), IterStep::Finished, "no retries left");
        // Without retries a timeout drops the peer at once.
        let mut iter = ClosestPeersIter::new(target, 1, 1, [(peer(1), vec![])]);
        iter.next_step();
        iter.on_timeout(&peer(1));
        assert_eq!(iter.next_step(), IterStep::Finished);
    }

    #[test]
    fn late_or_unknown_answers_are_ignored() {
        let target = Key::from_bytes(b"v");
        let mut iter = ClosestPeersIter::new(target, 2, 1, [(peer(1), vec![]), (peer(2), vec![])]);
        assert!(!iter.on_success(&peer(1), [], None), "not contacted yet");
        let IterStep::Contact { peer: first, .. } = iter.next_step() else {
            panic!()
        };
        assert_eq!(iter.next_step(), IterStep::Waiting, "alpha = 1");
        assert!(iter.on_failure(&first));
        assert!(!iter.on_success(&first, [], None), "already failed");
        assert!(!iter.on_success(&peer(9), [], None));
        // The local peer is never a candidate.
        let IterStep::Contact { peer: second, .. } = iter.next_step() else {
            panic!()
        };
        iter.on_success(&second, [KadPeer::new(peer(0), vec![])], Some(&peer(0)));
        assert!(iter.candidate(&peer(0)).is_none());
        assert_eq!(iter.next_step(), IterStep::Finished);
    }
}
