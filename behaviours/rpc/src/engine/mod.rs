//! [`RpcEngine`]: the sans-IO caller side of RPC — provider discovery with a cache,
//! selection, attempts with timeouts, failover with back-off, the result cache, interests.
//!
//! Inputs: [`call`](RpcEngine::call), [`handle_providers`](RpcEngine::handle_providers)
//! (a DHT lookup's outcome), [`handle_result`](RpcEngine::handle_result) (an attempt's),
//! [`handle_rtt`](RpcEngine::handle_rtt), [`set_local`](RpcEngine::set_local),
//! [`add_interest`](RpcEngine::add_interest), [`handle_timeout`](RpcEngine::handle_timeout).
//! Outputs: [`poll_action`](RpcEngine::poll_action) ([`RpcAction`]: look up providers,
//! send an attempt, run a local handler, abandon an attempt) and
//! [`poll_event`](RpcEngine::poll_event) ([`RpcEvent`]).
//!
//! A call's life: an idempotent call is answered from the result cache if it can be; else the
//! providers of its name come from the provider cache or a DHT lookup (one at a time per
//! name, shared by every call waiting for it); the strategy picks one (providers in
//! back-off only if no other is left); the attempt runs until its result or its timeout. A
//! failed attempt moves to the next untried provider when the call is idempotent or the
//! request provably did not run ([`AttemptError::not_executed`]), up to `retries` times;
//! the failed provider is backed off for [`RpcConfig::backoff`].

mod cache;
mod select;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use rand::rngs::StdRng;
use rand::SeedableRng;

use self::cache::{result_key, ProviderCache, ResultCache};
pub use self::select::{Candidate, Selector, Strategy};
use crate::metrics::{label, RpcMetrics};
use crate::name::{ProcedureName, Realm};
use crate::wire::{RemoteError, WireRequest};

/// The engine's settings; defaults in brackets.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// The realm calls look in and registrations announce in \[`default`\].
    pub realm: Realm,
    /// How long a DHT lookup's providers are cached \[30 s\].
    pub provider_ttl: Duration,
    /// Names whose providers are cached at most \[1024\].
    pub max_cached_names: usize,
    /// Providers kept per name at most \[64\].
    pub max_providers_per_name: usize,
    /// How long a DHT lookup may take before it counts as finding nothing \[10 s\].
    pub lookup_timeout: Duration,
    /// How long a provider that failed is avoided \[10 s\].
    pub backoff: Duration,
    /// Results cached at most \[4096\].
    pub cache_max_entries: usize,
    /// Result bytes cached at most \[16 MiB\].
    pub cache_max_bytes: usize,
    /// How long a result of an idempotent call is cached \[10 s\]; per call
    /// [`CallOpts::cache_ttl`].
    pub cache_ttl: Duration,
    /// Calls under way at most (past it `call` refuses with [`CallError::Busy`]) \[4096\].
    pub max_calls: usize,
    /// Our attempts under way to one remote provider at most \[32, the swarm's default
    /// limit of inbound streams per peer and protocol\]: a call whose candidates are all at
    /// it waits, in order, for one of them to finish an attempt.
    pub max_outstanding_per_provider: usize,
    /// Largest payload of a call, in bytes \[1 MiB\].
    pub max_payload: usize,
    /// How often the providers of a name of interest are looked up \[5 s\].
    pub interest_interval: Duration,
    /// Names of interest at most \[256\].
    pub max_interests: usize,
    /// Events waiting to be polled at most; past it the oldest are dropped (logged) \[8192\].
    pub max_events: usize,
    /// Seed of the generator of [`Strategy::Random`] \[0: from the OS\].
    pub seed: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            realm: Realm::default(),
            provider_ttl: Duration::from_secs(30),
            max_cached_names: 1024,
            max_providers_per_name: 64,
            lookup_timeout: Duration::from_secs(10),
            backoff: Duration::from_secs(10),
            cache_max_entries: 4096,
            cache_max_bytes: 16 * 1024 * 1024,
            cache_ttl: Duration::from_secs(10),
            max_calls: 4096,
            max_outstanding_per_provider: 32,
            max_payload: 1024 * 1024,
            interest_interval: Duration::from_secs(5),
            max_interests: 256,
            max_events: 8192,
            seed: 0,
        }
    }
}

/// How one call is made; `CallOpts::default()` is a non-idempotent, round-robin call with a
/// 5 s timeout and 2 retries.
#[derive(Debug, Clone)]
pub struct CallOpts {
    /// Time for one attempt (the provider cancels its handler past it). Clamped to about a
    /// century, as every duration of the engine is: `Duration::MAX` means "never".
    pub timeout: Duration,
    /// How a provider is picked.
    pub strategy: Strategy,
    /// Attempts on other providers after a failed one, at most (only for idempotent calls,
    /// or when the request provably did not run).
    pub retries: usize,
    /// Whether the procedure may run more than once for one call: failover on any failure,
    /// and the result cached.
    pub idempotent: bool,
    /// Use this node's own handler when it has one, whatever the strategy.
    pub prefer_local: bool,
    /// How long the result is cached (idempotent calls); `None` is
    /// [`RpcConfig::cache_ttl`], zero disables caching for this call.
    pub cache_ttl: Option<Duration>,
}

impl Default for CallOpts {
    fn default() -> Self {
        CallOpts {
            timeout: Duration::from_secs(5),
            strategy: Strategy::RoundRobin,
            retries: 2,
            idempotent: false,
            prefer_local: false,
            cache_ttl: None,
        }
    }
}

impl CallOpts {
    /// Marks the call idempotent.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Sets the strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the time for one attempt.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retries.
    pub fn with_retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }
}

/// Identifies a call, from [`RpcEngine::call`] to its [`RpcEvent::CallFinished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// No result within the attempt's timeout.
    #[error("timed out")]
    Timeout,
    /// The provider answered with an error.
    #[error("remote: {0}")]
    Remote(RemoteError),
    /// The request was not delivered (dial failed, protocol refused, stream not opened): the
    /// procedure did not run.
    #[error("not delivered: {0}")]
    NotDelivered(String),
    /// The exchange broke after the request was sent (connection lost, stream reset, bad
    /// response): the procedure may have run.
    #[error("lost: {0}")]
    Lost(String),
}

impl AttemptError {
    /// Whether the procedure provably did not run for this attempt.
    pub fn not_executed(&self) -> bool {
        match self {
            AttemptError::NotDelivered(_) => true,
            AttemptError::Remote(e) => e.not_executed(),
            _ => false,
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Nobody provides the name (in this realm), as far as the DHT knows.
    #[error("no providers")]
    NoProviders,
    /// The attempt timed out and the call could not move on (not idempotent).
    #[error("timed out")]
    Timeout,
    /// Every attempt failed.
    #[error("all providers failed after {} attempts", attempts.len())]
    AllProvidersFailed {
        /// Each attempt: the provider and why it failed.
        attempts: Vec<(PeerId, AttemptError)>,
    },
    /// The provider's handler failed (or refused), and the call could not move on.
    #[error("remote: {0}")]
    Remote(RemoteError),
    /// The exchange broke after the request was sent, and the call could not move on (not
    /// idempotent): the procedure may have run.
    #[error("lost: {0}")]
    Lost(String),
    /// [`RpcConfig::max_calls`] calls under way; this one was not made.
    #[error("{limit} calls already under way")]
    Busy {
        /// The limit.
        limit: usize,
    },
    /// The payload is over [`RpcConfig::max_payload`].
    #[error("payload over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The call was dropped before it finished (the behaviour went away).
    #[error("call dropped")]
    Dropped,
}

impl CallError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NoProviders => "no_providers",
            CallError::Timeout => "timeout",
            CallError::AllProvidersFailed { .. } => "all_providers_failed",
            CallError::Remote(_) => "remote",
            CallError::Lost(_) => "lost",
            CallError::Busy { .. } => "busy",
            CallError::PayloadTooLarge { .. } => "payload_too_large",
            CallError::Dropped => "dropped",
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcAction {
    /// Look up the providers of `name` in the DHT; answer with
    /// [`RpcEngine::handle_providers`].
    FindProviders {
        /// The name.
        name: ProcedureName,
    },
    /// Send an attempt to a remote provider; answer with [`RpcEngine::handle_result`].
    Send {
        /// The call.
        call: CallId,
        /// The attempt (from 1).
        attempt: u32,
        /// The provider.
        peer: PeerId,
        /// The request.
        request: WireRequest,
    },
    /// Run this node's own handler; answer with [`RpcEngine::handle_result`].
    CallLocal {
        /// The call.
        call: CallId,
        /// The attempt (from 1).
        attempt: u32,
        /// The request.
        request: WireRequest,
    },
    /// The attempt's result is no longer wanted (it timed out): drop its work if possible.
    Abandon {
        /// The call.
        call: CallId,
        /// The attempt.
        attempt: u32,
    },
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcEvent {
    /// A call finished.
    CallFinished {
        /// The call.
        id: CallId,
        /// Its name.
        name: ProcedureName,
        /// The result, or why not.
        result: Result<Vec<u8>, CallError>,
        /// The provider that answered (`None` for a cache hit or a failure).
        provider: Option<PeerId>,
        /// Attempts made.
        attempts: u32,
        /// Whether the result came from the cache.
        cached: bool,
    },
    /// A provider of a name of interest appeared ([`RpcEngine::add_interest`]).
    ProviderAppeared {
        /// The name.
        name: ProcedureName,
        /// The provider.
        peer: PeerId,
    },
}

/// One call under way.
#[derive(Debug)]
struct Call {
    name: ProcedureName,
    payload: Vec<u8>,
    opts: CallOpts,
    started: Instant,
    failures: Vec<(PeerId, AttemptError)>,
    /// The attempt in flight: its number, provider and start.
    current: Option<Attempt>,
    attempts: u32,
}

/// The attempt of a call in flight.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    number: u32,
    peer: PeerId,
    sent: Instant,
    /// Its key in the timer set.
    timer: (Instant, u64),
}

/// What the engine knows of a provider.
#[derive(Debug, Default)]
struct PeerStats {
    ewma: Option<Duration>,
    rtt: Option<Duration>,
    outstanding: usize,
    backoff_until: Option<Instant>,
}

/// Timers, ordered by deadline; checked against the state when they fire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    Attempt(CallId, u32),
    Lookup(ProcedureName),
    Interest(ProcedureName),
}

/// Providers whose statistics (latency, calls under way, back-off) are kept, beyond which
/// idle ones are forgotten: 4096.
pub const MAX_PEER_STATS: usize = 4096;

/// Waiting calls tried per freed slot: 4.
const DEQUEUE_BATCH: usize = 4;

/// Weight of a new latency sample in the EWMA.
const EWMA_ALPHA: f64 = 0.3;

/// The sans-IO caller side of RPC. See the [module docs](self).
#[derive(Debug)]
pub struct RpcEngine {
    config: RpcConfig,
    local: PeerId,
    calls: HashMap<CallId, Call>,
    providers: ProviderCache,
    /// Lookups running, with the calls waiting for each.
    lookups: HashMap<ProcedureName, Vec<CallId>>,
    peers: HashMap<PeerId, PeerStats>,
    turns: HashMap<ProcedureName, usize>,
    results: ResultCache,
    interests: HashMap<ProcedureName, HashSet<PeerId>>,
    /// Calls waiting for a provider below `max_outstanding_per_provider`, in order.
    queued: VecDeque<CallId>,
    local_names: HashSet<ProcedureName>,
    timers: BTreeMap<(Instant, u64), Timer>,
    actions: VecDeque<RpcAction>,
    events: VecDeque<RpcEvent>,
    rng: StdRng,
    next_id: u64,
    next_timer: u64,
    metrics: RpcMetrics,
}

/// A moment far enough away to stand for "never" (about a century).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d` after `now`, clamped to [`FAR`] (a user's `Duration::MAX` would overflow the
/// `Instant`, and panic the swarm's task).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

impl RpcEngine {
    /// An engine for the node `local`.
    pub fn new(local: PeerId, config: RpcConfig) -> Self {
        let rng = match config.seed {
            0 => StdRng::from_entropy(),
            s => StdRng::seed_from_u64(s),
        };
        RpcEngine {
            providers: ProviderCache::new(
                config.provider_ttl,
                config.max_cached_names,
                config.max_providers_per_name,
            ),
            results: ResultCache::new(config.cache_max_entries, config.cache_max_bytes),
            config,
            local,
            calls: HashMap::new(),
            lookups: HashMap::new(),
            peers: HashMap::new(),
            turns: HashMap::new(),
            interests: HashMap::new(),
            queued: VecDeque::new(),
            local_names: HashSet::new(),
            timers: BTreeMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            next_id: 1,
            next_timer: 0,
            metrics: RpcMetrics::default(),
        }
    }

    /// Reports into `metrics` (shared with the application).
    pub fn with_metrics(mut self, metrics: RpcMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Reports into `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: RpcMetrics) {
        self.metrics = metrics;
    }

    /// The settings.
    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &RpcMetrics {
        &self.metrics
    }

    /// Calls under way.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Results in the cache.
    pub fn cached_results(&self) -> usize {
        self.results.len()
    }

    /// Whether `peer` is in back-off at `now`.
    pub fn is_backed_off(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|s| s.backoff_until)
            .is_some_and(|t| t > now)
    }

    /// Our calls to `peer` under way.
    pub fn outstanding(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |s| s.outstanding)
    }

    /// Marks `name` as served (or no longer) by this node: a local candidate for calls.
    pub fn set_local(&mut self, name: ProcedureName, served: bool) {
        if served {
            self.local_names.insert(name);
        } else {
            self.local_names.remove(&name);
        }
    }

    /// Ping's latest RTT to `peer`: seeds its latency estimate.
    pub fn handle_rtt(&mut self, peer: PeerId, rtt: Duration) {
        if let Some(s) = self.peers.get_mut(&peer) {
            s.rtt = Some(rtt);
        } else if self.peers.len() < MAX_PEER_STATS {
            self.peers.insert(
                peer,
                PeerStats {
                    rtt: Some(rtt),
                    ..PeerStats::default()
                },
            );
        }
    }

    /// Past [`MAX_PEER_STATS`] providers known, forgets those with nothing under way and
    /// no back-off (their latency estimates are measured again if they come back).
    fn prune_peers(&mut self, now: Instant) {
        if self.peers.len() > MAX_PEER_STATS {
            self.peers
                .retain(|_, s| s.outstanding > 0 || s.backoff_until.is_some_and(|t| t > now));
        }
    }

    fn timer(&mut self, at: Instant, t: Timer) {
        self.next_timer += 1;
        self.timers.insert((at, self.next_timer), t);
    }

    fn event(&mut self, e: RpcEvent) {
        if self.events.len() >= self.config.max_events {
            tracing::warn!("rpc: event queue full, dropping the oldest event");
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Starts a call of `name` with `payload`; its end is an [`RpcEvent::CallFinished`]
    /// (at once for a cache hit).
    ///
    /// # Errors
    ///
    /// [`CallError::Busy`] or [`CallError::PayloadTooLarge`]: the call was not made and no
    /// event comes.
    pub fn call(
        &mut self,
        now: Instant,
        name: ProcedureName,
        payload: Vec<u8>,
        opts: CallOpts,
    ) -> Result<CallId, CallError> {
        if payload.len() > self.config.max_payload {
            return Err(CallError::PayloadTooLarge {
                limit: self.config.max_payload,
            });
        }
        if self.calls.len() >= self.config.max_calls {
            return Err(CallError::Busy {
                limit: self.config.max_calls,
            });
        }
        let id = CallId(self.next_id);
        self.next_id += 1;
        if opts.idempotent {
            if let Some(value) = self.results.get(&result_key(&name, &payload), now) {
                self.metrics.cache_hits.inc();
                self.metrics
                    .calls
                    .get_or_create(&label("outcome", "cached"))
                    .inc();
                self.event(RpcEvent::CallFinished {
                    id,
                    name,
                    result: Ok(value),
                    provider: None,
                    attempts: 0,
                    cached: true,
                });
                return Ok(id);
            }
            self.metrics.cache_misses.inc();
        }
        self.calls.insert(
            id,
            Call {
                name,
                payload,
                opts,
                started: now,
                failures: Vec::new(),
                current: None,
                attempts: 0,
            },
        );
        self.dispatch(now, id);
        Ok(id)
    }

    /// Gives up on call `id` now (its event is not reported). Returns whether it was under way.
    pub fn cancel(&mut self, now: Instant, id: CallId) -> bool {
        let Some(call) = self.calls.remove(&id) else {
            return false;
        };
        if let Some(Attempt {
            number: attempt,
            peer,
            timer,
            ..
        }) = call.current
        {
            self.timers.remove(&timer);
            self.release(&peer);
            self.actions
                .push_back(RpcAction::Abandon { call: id, attempt });
            self.dequeue(now);
        }
        true
    }

    fn release(&mut self, peer: &PeerId) {
        if let Some(s) = self.peers.get_mut(peer) {
            s.outstanding = s.outstanding.saturating_sub(1);
        }
    }

    /// A slot freed: moves waiting calls on (a few at most, so that a long queue costs
    /// nothing per result; a call that still finds no slot goes to the back).
    fn dequeue(&mut self, now: Instant) {
        for _ in 0..DEQUEUE_BATCH.min(self.queued.len()) {
            let Some(id) = self.queued.pop_front() else {
                return;
            };
            if self.calls.contains_key(&id) {
                self.dispatch(now, id);
            }
        }
    }

    /// The candidates for `name`, sorted by peer id, or `None` if a lookup is needed.
    fn candidates(&self, name: &ProcedureName, now: Instant) -> Option<Vec<Candidate>> {
        let local = self.local_names.contains(name);
        let remote = self.providers.get(name, now);
        if remote.is_none() && !local {
            return None;
        }
        let mut peers: Vec<PeerId> = remote
            .unwrap_or(&[])
            .iter()
            .copied()
            .filter(|p| *p != self.local)
            .collect();
        if local {
            peers.push(self.local);
        }
        peers.sort();
        Some(
            peers
                .into_iter()
                .map(|peer| {
                    let s = self.peers.get(&peer);
                    Candidate {
                        peer,
                        is_local: peer == self.local,
                        latency: s.and_then(|s| s.ewma.or(s.rtt)),
                        outstanding: s.map_or(0, |s| s.outstanding),
                    }
                })
                .collect(),
        )
    }

    /// Moves call `id` on: an attempt, a lookup, or its end.
    fn dispatch(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let name = call.name.clone();
        let Some(all) = self.candidates(&name, now) else {
            self.lookup(now, name, Some(id));
            return;
        };
        let tried: HashSet<PeerId> = call.failures.iter().map(|(p, _)| *p).collect();
        let untried: Vec<Candidate> = all
            .into_iter()
            .filter(|c| !tried.contains(&c.peer))
            .collect();
        let fresh: Vec<Candidate> = untried
            .iter()
            .filter(|c| !self.is_backed_off(&c.peer, now))
            .cloned()
            .collect();
        let candidates = if fresh.is_empty() { untried } else { fresh };
        if candidates.is_empty() {
            let error = if call.failures.is_empty() {
                CallError::NoProviders
            } else {
                CallError::AllProvidersFailed {
                    attempts: call.failures.clone(),
                }
            };
            self.finish(now, id, Err(error), None);
            return;
        }
        let limit = self.config.max_outstanding_per_provider;
        let candidates: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| c.is_local || c.outstanding < limit)
            .collect();
        if candidates.is_empty() {
            // Every candidate is at its limit: wait for a slot.
            self.queued.push_back(id);
            return;
        }
        let pick = match candidates.iter().position(|c| c.is_local) {
            Some(i) if call.opts.prefer_local => i,
            _ => {
                let turn = self.turns.entry(name.clone()).or_insert(0);
                let t = *turn;
                *turn = turn.wrapping_add(1);
                select::select(&call.opts.strategy, &name, &candidates, t, &mut self.rng)
            }
        };
        let peer = candidates[pick].peer;
        let timeout = call.opts.timeout;
        let request = WireRequest {
            realm: self.config.realm.clone(),
            name,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            payload: call.payload.clone(),
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.attempts += 1;
        let attempt = call.attempts;
        self.next_timer += 1;
        let timer = (after(now, timeout), self.next_timer);
        call.current = Some(Attempt {
            number: attempt,
            peer,
            sent: now,
            timer,
        });
        self.timers.insert(timer, Timer::Attempt(id, attempt));
        self.peers.entry(peer).or_default().outstanding += 1;
        self.actions.push_back(if peer == self.local {
            RpcAction::CallLocal {
                call: id,
                attempt,
                request,
            }
        } else {
            RpcAction::Send {
                call: id,
                attempt,
                peer,
                request,
            }
        });
    }

    /// Starts a lookup of `name` unless one runs; `waiting` waits for it.
    fn lookup(&mut self, now: Instant, name: ProcedureName, waiting: Option<CallId>) {
        match self.lookups.get_mut(&name) {
            Some(calls) => calls.extend(waiting),
            None => {
                self.lookups
                    .insert(name.clone(), waiting.into_iter().collect());
                self.timer(
                    after(now, self.config.lookup_timeout),
                    Timer::Lookup(name.clone()),
                );
                self.actions.push_back(RpcAction::FindProviders { name });
            }
        }
    }

    /// The providers of `name` found in the DHT (empty if none, or the lookup failed).
    pub fn handle_providers(&mut self, now: Instant, name: &ProcedureName, peers: Vec<PeerId>) {
        let peers: Vec<PeerId> = peers.into_iter().filter(|p| *p != self.local).collect();
        if let Some(known) = self.interests.get_mut(name) {
            let mut appeared = Vec::new();
            for p in &peers {
                if known.len() < self.config.max_providers_per_name && known.insert(*p) {
                    appeared.push(*p);
                }
            }
            for peer in appeared {
                self.event(RpcEvent::ProviderAppeared {
                    name: name.clone(),
                    peer,
                });
            }
        }
        self.prune_peers(now);
        // Only non-empty results are cached: a provider appearing is found by the next call.
        if !peers.is_empty() {
            self.providers.insert(name.clone(), peers, now);
        }
        let waiting = self.lookups.remove(name).unwrap_or_default();
        for id in waiting {
            if self.providers.get(name, now).is_some() || self.local_names.contains(name) {
                self.dispatch(now, id);
            } else if let Some(call) = self.calls.get(&id) {
                let error = if call.failures.is_empty() {
                    CallError::NoProviders
                } else {
                    CallError::AllProvidersFailed {
                        attempts: call.failures.clone(),
                    }
                };
                self.finish(now, id, Err(error), None);
            }
        }
    }

    /// The outcome of attempt `attempt` of call `id` (late or unknown ones are ignored).
    pub fn handle_result(
        &mut self,
        now: Instant,
        id: CallId,
        attempt: u32,
        result: Result<Vec<u8>, AttemptError>,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(Attempt {
            number,
            peer,
            sent,
            timer,
        }) = call.current
        else {
            return;
        };
        if number != attempt {
            return;
        }
        call.current = None;
        // The attempt's timer goes with it: the timer set holds only live attempts.
        self.timers.remove(&timer);
        self.release(&peer);
        self.dequeue(now);
        match result {
            Ok(value) => {
                let sample = now.saturating_duration_since(sent);
                let stats = self.peers.entry(peer).or_default();
                // A peak EWMA: a slower sample is taken at once, faster ones decay into it,
                // so a provider that slows down is avoided from its first slow answer.
                stats.ewma = Some(match stats.ewma {
                    Some(old) if sample < old => {
                        old.mul_f64(1.0 - EWMA_ALPHA) + sample.mul_f64(EWMA_ALPHA)
                    }
                    _ => sample,
                });
                self.finish(now, id, Ok(value), Some(peer));
            }
            Err(error) => self.attempt_failed(now, id, peer, error),
        }
    }

    fn attempt_failed(&mut self, now: Instant, id: CallId, peer: PeerId, error: AttemptError) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        // A handler's own error is the procedure's answer: no back-off, no failover.
        if let AttemptError::Remote(RemoteError::Handler(_)) = error {
            let AttemptError::Remote(e) = error else {
                return;
            };
            self.finish(now, id, Err(CallError::Remote(e)), Some(peer));
            return;
        }
        let may_move = call.opts.idempotent || error.not_executed();
        let retries_left = (call.attempts as usize) <= call.opts.retries;
        tracing::debug!(call = id.0, %peer, %error, may_move, "rpc: attempt failed");
        call.failures.push((peer, error.clone()));
        if peer != self.local {
            self.peers.entry(peer).or_default().backoff_until =
                Some(after(now, self.config.backoff));
        }
        if may_move && retries_left {
            self.metrics.failovers.inc();
            self.dispatch(now, id);
            return;
        }
        let error = match (may_move, error) {
            (true, _) => CallError::AllProvidersFailed {
                attempts: call.failures.clone(),
            },
            (false, AttemptError::Timeout) => CallError::Timeout,
            (false, AttemptError::Remote(e)) => CallError::Remote(e),
            (false, AttemptError::Lost(m) | AttemptError::NotDelivered(m)) => CallError::Lost(m),
        };
        self.finish(now, id, Err(error), None);
    }

    fn finish(
        &mut self,
        now: Instant,
        id: CallId,
        result: Result<Vec<u8>, CallError>,
        provider: Option<PeerId>,
    ) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        match &result {
            Ok(value) => {
                self.metrics
                    .calls
                    .get_or_create(&label("outcome", "ok"))
                    .inc();
                self.metrics
                    .observe_latency(now.saturating_duration_since(call.started));
                if call.opts.idempotent {
                    let ttl = call.opts.cache_ttl.unwrap_or(self.config.cache_ttl);
                    let key = result_key(&call.name, &call.payload);
                    self.results.insert(key, value.clone(), ttl, now);
                }
            }
            Err(e) => {
                self.metrics
                    .calls
                    .get_or_create(&label("outcome", "error"))
                    .inc();
                self.metrics
                    .errors
                    .get_or_create(&label("kind", e.kind()))
                    .inc();
            }
        }
        self.event(RpcEvent::CallFinished {
            id,
            name: call.name,
            result,
            provider,
            attempts: call.attempts,
            cached: false,
        });
    }

    /// Asks to be told ([`RpcEvent::ProviderAppeared`]) of every provider of `name` seen
    /// from now on: its providers are looked up every [`RpcConfig::interest_interval`].
    /// Returns `false` (nothing done) at [`RpcConfig::max_interests`].
    pub fn add_interest(&mut self, now: Instant, name: ProcedureName) -> bool {
        if self.interests.contains_key(&name) {
            return true;
        }
        if self.interests.len() >= self.config.max_interests {
            return false;
        }
        self.interests.insert(name.clone(), HashSet::new());
        self.lookup(now, name.clone(), None);
        self.timer(
            after(now, self.config.interest_interval),
            Timer::Interest(name),
        );
        true
    }

    /// Stops looking up `name` for interest.
    pub fn remove_interest(&mut self, name: &ProcedureName) {
        self.interests.remove(name);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// Runs the timers due at `now`: attempts timing out, lookups giving up, interests.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Timer::Attempt(id, attempt) => {
                    let live = self
                        .calls
                        .get(&id)
                        .and_then(|c| c.current)
                        .is_some_and(|a| a.number == attempt);
                    if live {
                        self.actions
                            .push_back(RpcAction::Abandon { call: id, attempt });
                        self.handle_result(now, id, attempt, Err(AttemptError::Timeout));
                    }
                }
                Timer::Lookup(name) => {
                    if self.lookups.contains_key(&name) {
                        self.handle_providers(now, &name, Vec::new());
                    }
                }
                Timer::Interest(name) => {
                    if self.interests.contains_key(&name) {
                        self.lookup(now, name.clone(), None);
                        self.timer(
                            after(now, self.config.interest_interval),
                            Timer::Interest(name),
                        );
                    }
                }
            }
        }
    }

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<RpcAction> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RpcEvent> {
        self.events.pop_front()
    }
}
