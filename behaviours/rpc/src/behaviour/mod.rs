//! [`Behaviour`]: the [`RpcEngine`] driven over kademlia and request-response (feature
//! `swarm`).
//!
//! - **Kademlia** (given to [`Behaviour::new`]; [`Behaviour::kad_mut`] to bootstrap): a
//!   registration announces the node as a provider of the name's service key in its realm
//!   (`kad::Behaviour::announce("rpc/<realm>/<name>")`, re-announced by kademlia while
//!   registered, withdrawn on unregister); the engine's lookups are `get_providers` of that
//!   key, and the providers' addresses are offered to the swarm's dials. Other kademlia
//!   events are passed on ([`Event::Kad`]).
//! - **Request-response** with the RPC codec on [`PROTOCOL`]: the engine's attempts go out
//!   as requests; remotes' requests run the local handlers.
//! - **Serving**: at most [`Config::max_handlers`] handlers run at once, at most
//!   [`Config::max_handlers_per_peer`] for one caller; past either the caller gets
//!   [`RemoteError::Overloaded`] (the handler did not run, so it may fail over). A handler
//!   is cancelled (dropped) at the caller's timeout, carried in the request, and at most
//!   after [`Config::max_call_time`].
//! - **Ping's RTT table** ([`Behaviour::with_rtt_table`]): seeds the latency estimates of
//!   [`Strategy::LeastLatency`](crate::Strategy::LeastLatency).

mod addrs;
mod codec;
mod handlers;
mod pending;
#[cfg(feature = "serde")]
mod typed;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use meshwire_core::{ConnectionId, PeerId};
use meshwire_kad::{self as kad, QueryId, QueryResult};
use meshwire_ping::RttTable;
use meshwire_request_response::{
    self as rr, InboundFailure, Message, OutboundFailure, ProtocolSupport, ResponseChannel,
};
use meshwire_swarm::{
    ConnectionDenied, FromSwarm, InboundStream, Multiaddr, NetworkBehaviour, OutboundStreamResult,
    StreamProtocol, Timer, ToSwarm,
};

use self::addrs::ProviderAddrs;
use self::codec::RpcCodec;
use self::handlers::{Handler, Handlers};
pub use self::handlers::{HandlerFuture, HandlerId, HandlerResult};
pub use self::pending::PendingCall;
#[cfg(feature = "serde")]
pub use self::typed::{TypedCall, TypedCallError};
use crate::engine::{
    AttemptError, CallError, CallId, CallOpts, RpcAction, RpcConfig, RpcEngine, RpcEvent,
};
use crate::metrics::{label, RpcMetrics};
use crate::name::{service_name, ProcedureName};
use crate::wire::{RemoteError, WireRequest, WireResponse, PROTOCOL};

/// How often ping's RTT table is read: 500 ms.
pub const RTT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The behaviour's settings; defaults in brackets.
#[derive(Debug, Clone)]
pub struct Config {
    /// The caller side's settings (realm, caches, back-off, bounds).
    pub engine: RpcConfig,
    /// Largest request read, header included \[1 MiB + 512\]: a larger one resets the stream
    /// unread.
    pub max_request_bytes: u64,
    /// Largest response read \[4 MiB\]: a larger one fails the attempt.
    pub max_response_bytes: u64,
    /// Handlers running at once for remote callers \[256\].
    pub max_handlers: usize,
    /// Handlers running at once for one remote caller \[32\].
    pub max_handlers_per_peer: usize,
    /// Longest a handler runs, and longest an exchange is kept \[60 s\].
    pub max_call_time: Duration,
    /// Providers whose addresses (from DHT provider records, to dial them) are kept at
    /// most \[4096\]; past it the least recently stored or used is evicted.
    pub max_provider_addrs: usize,
    /// Addresses kept per provider at most, the first of its record \[8\].
    pub max_addrs_per_provider: usize,
    /// How long a provider's addresses are kept after the last record naming it \[5 min\];
    /// a failed dial to the provider drops them at once.
    pub provider_addrs_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            engine: RpcConfig::default(),
            max_request_bytes: 1024 * 1024 + 512,
            max_response_bytes: 4 * 1024 * 1024,
            max_handlers: 256,
            max_handlers_per_peer: 32,
            max_call_time: Duration::from_secs(60),
            max_provider_addrs: 4096,
            max_addrs_per_provider: 8,
            provider_addrs_ttl: Duration::from_secs(5 * 60),
        }
    }
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Kademlia's provider store is full.
    #[error("announcing: {0}")]
    Store(#[from] kad::StoreError),
}

/// What the behaviour reports.
#[derive(Debug)]
pub enum Event {
    /// A call made with [`Behaviour::call`] finished, or a provider of a name of interest
    /// appeared.
    Rpc(RpcEvent),
    /// A remote's request could not be read (too large, malformed, too slow, flood limits)
    /// or answered.
    InboundFailure {
        /// The remote.
        peer: PeerId,
        /// Why.
        error: InboundFailure,
    },
    /// Kademlia's events, but those of RPC's own lookups.
    Kad(kad::Event),
}

/// What the composed behaviours report.
pub(crate) enum PartEvent {
    Kad(kad::Event),
    Rr(rr::Event<<RpcCodec as rr::Codec>::Request, WireResponse, (CallId, u32)>),
}

impl From<kad::Event> for PartEvent {
    fn from(e: kad::Event) -> Self {
        PartEvent::Kad(e)
    }
}

impl From<rr::Event<<RpcCodec as rr::Codec>::Request, WireResponse, (CallId, u32)>> for PartEvent {
    fn from(e: rr::Event<<RpcCodec as rr::Codec>::Request, WireResponse, (CallId, u32)>) -> Self {
        PartEvent::Rr(e)
    }
}

/// Kademlia and request-response, in this order.
#[derive(meshwire_swarm::NetworkBehaviour)]
#[behaviour(to_swarm = "PartEvent")]
pub(crate) struct Parts {
    pub(crate) kad: kad::Behaviour,
    pub(crate) rr: rr::Behaviour<RpcCodec, (CallId, u32)>,
}

/// A handler that finished: for a remote caller (answer it) or for a local call.
enum Done {
    Remote {
        peer: PeerId,
        channel: ResponseChannel<WireResponse>,
        result: WireResponse,
    },
    Local {
        call: CallId,
        attempt: u32,
        result: Result<HandlerResult, futures::future::Aborted>,
    },
}

/// RPC over a swarm: the [`RpcEngine`] driven over kademlia and request-response.
/// `swarm`).
///
/// - **Kademlia** (given to [`Behaviour::new`]; [`Behaviour::kad_mut`] to bootstrap): a
///   registration announces the node as a provider of the name's service key in its realm
///   (`kad::Behaviour::announce("rpc/<realm>/<name>")`, re-announced by kademlia while
///   registered, withdrawn on unregister); the engine's lookups are `get_providers` of that
///   key, and the providers' addresses are offered to the swarm's dials. Other kademlia
///   events are passed on ([`Event::Kad`]).
/// - **Request-response** with the RPC codec on [`PROTOCOL`]: the engine's attempts go out
///   as requests; remotes' requests run the local handlers.
/// - **Serving**: at most [`Config::max_handlers`] handlers run at once, at most
///   [`Config::max_handlers_per_peer`] for one caller; past either the caller gets
///   [`RemoteError::Overloaded`] (the handler did not run, so it may fail over). A handler
///   is cancelled (dropped) at the caller's timeout, carried in the request, and at most
///   after [`Config::max_call_time`].
/// - **Ping's RTT table** ([`Behaviour::with_rtt_table`]): seeds the latency estimates of
///   [`Strategy::LeastLatency`](crate::Strategy::LeastLatency).
///
/// See the [crate docs](crate) for the API as a whole.
pub struct Behaviour {
    parts: Parts,
    engine: RpcEngine,
    config: Config,
    handlers: Handlers,
    running: FuturesUnordered<BoxFuture<'static, Done>>,
    serving: HashMap<PeerId, usize>,
    serving_total: usize,
    local_calls: HashMap<(CallId, u32), AbortHandle>,
    /// The request-response request of each remote attempt whose exchange is open (as
    /// many as request-response's requests under way at most).
    remote_attempts: HashMap<(CallId, u32), rr::OutboundRequestId>,
    lookups: HashMap<QueryId, ProcedureName>,
    provider_addrs: ProviderAddrs,
    replies: HashMap<CallId, oneshot::Sender<Result<Vec<u8>, CallError>>>,
    events: VecDeque<Event>,
    rtt: Option<RttTable>,
    next_rtt_poll: Instant,
    timer: Timer,
    waker: Option<Waker>,
    metrics: RpcMetrics,
}

impl Behaviour {
    /// RPC for the node `kad` runs on.
    pub fn new(kad: kad::Behaviour, config: Config) -> Self {
        let local = kad.local_peer_id();
        let codec = RpcCodec {
            max_request: config.max_request_bytes,
            max_response: config.max_response_bytes,
        };
        // Request-response's own limits sit above ours, so that a flood meets `Overloaded`
        // first and the reset only past twice our limits.
        let rr_config = rr::Config::default()
            .with_request_timeout(config.max_call_time)
            .with_max_inbound_streams(config.max_handlers.saturating_mul(2).max(1))
            .with_max_inbound_streams_per_peer(
                config.max_handlers_per_peer.saturating_mul(2).max(1),
            )
            .with_max_outbound_in_flight(config.engine.max_calls.max(1));
        let rr = rr::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
            rr_config,
        );
        let provider_addrs = ProviderAddrs::new(
            config.max_provider_addrs,
            config.max_addrs_per_provider,
            config.provider_addrs_ttl,
        );
        Behaviour {
            parts: Parts { kad, rr },
            engine: RpcEngine::new(local, config.engine.clone()),
            config,
            handlers: Handlers::default(),
            running: FuturesUnordered::new(),
            serving: HashMap::new(),
            serving_total: 0,
            local_calls: HashMap::new(),
            remote_attempts: HashMap::new(),
            lookups: HashMap::new(),
            provider_addrs,
            replies: HashMap::new(),
            events: VecDeque::new(),
            rtt: None,
            next_rtt_poll: Instant::now(),
            timer: Timer::default(),
            waker: None,
            metrics: RpcMetrics::default(),
        }
    }

    /// Reports into `metrics` (e.g. from [`RpcMetrics::register`]).
    pub fn with_metrics(mut self, metrics: RpcMetrics) -> Self {
        self.engine.set_metrics(metrics.clone());
        self.metrics = metrics;
        self
    }

    /// Reads ping's RTTs (every [`RTT_POLL_INTERVAL`]) to seed the latency estimates.
    pub fn with_rtt_table(mut self, table: RttTable) -> Self {
        self.rtt = Some(table);
        self
    }

    /// Kademlia, e.g. to add bootstrap peers.
    pub fn kad_mut(&mut self) -> &mut kad::Behaviour {
        &mut self.parts.kad
    }

    /// Kademlia.
    pub fn kad(&self) -> &kad::Behaviour {
        &self.parts.kad
    }

    /// The caller side's engine (calls in flight, back-off, cache size).
    pub fn engine(&self) -> &RpcEngine {
        &self.engine
    }

    /// The metrics.
    pub fn metrics(&self) -> &RpcMetrics {
        &self.metrics
    }

    /// Attempts of our calls whose exchange with a remote provider is open: an attempt
    /// abandoned (timed out, or its call cancelled) leaves at once, its stream reset.
    pub fn remote_attempts_in_flight(&self) -> usize {
        self.parts.rr.outbound_in_flight()
    }

    /// Providers whose addresses (from DHT provider records) are kept, at most
    /// [`Config::max_provider_addrs`].
    pub fn provider_addrs_len(&self) -> usize {
        self.provider_addrs.len()
    }

    /// Handlers running for remote callers.
    pub fn handlers_running(&self) -> usize {
        self.serving_total
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Serves `name` with `handler` (an async function of the payload). Several handlers
    /// of one name are taken in turn. The first handler of a name announces the node as a
    /// provider of it in the DHT (in the realm).
    ///
    /// # Errors
    ///
    /// Kademlia's provider store is full; the handler is registered anyway and serves
    /// callers that find the node otherwise (and local calls).
    pub fn register<F, Fut>(
        &mut self,
        name: ProcedureName,
        handler: F,
    ) -> Result<HandlerId, RegisterError>
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler: Handler = std::sync::Arc::new(move |p| Box::pin(handler(p)));
        let (id, first) = self.handlers.add(name.clone(), handler);
        if first {
            self.engine.set_local(name.clone(), true);
            let service = service_name(&self.config.engine.realm, &name);
            self.parts.kad.announce(&service)?;
        }
        self.wake();
        Ok(id)
    }

    /// Stops serving `name`: every handler removed, the announcement withdrawn (remote
    /// provider records expire by themselves). Returns how many handlers there were.
    pub fn unregister(&mut self, name: &ProcedureName) -> usize {
        let n = self.handlers.remove_name(name);
        if n > 0 {
            self.withdraw(name);
        }
        n
    }

    /// Removes one handler; the name is withdrawn with its last handler. Returns whether
    /// the handler was registered.
    pub fn unregister_handler(&mut self, id: HandlerId) -> bool {
        match self.handlers.remove(id) {
            Some(Some(name)) => {
                self.withdraw(&name);
                true
            }
            Some(None) => true,
            None => false,
        }
    }

    fn withdraw(&mut self, name: &ProcedureName) {
        self.engine.set_local(name.clone(), false);
        let service = service_name(&self.config.engine.realm, name);
        self.parts.kad.withdraw(&service);
    }

    /// Handlers registered for `name`.
    pub fn handler_count(&self, name: &ProcedureName) -> usize {
        self.handlers.count(name)
    }

    /// The names this node serves.
    pub fn registered(&self) -> Vec<ProcedureName> {
        self.handlers.names().cloned().collect()
    }

    /// Calls `name` with `payload`; the result comes as
    /// [`Event::Rpc`]`(`[`RpcEvent::CallFinished`]`)` with the returned id.
    ///
    /// # Errors
    ///
    /// [`CallError::Busy`] or [`CallError::PayloadTooLarge`]: nothing was sent.
    pub fn call(
        &mut self,
        name: ProcedureName,
        payload: Vec<u8>,
        opts: CallOpts,
    ) -> Result<CallId, CallError> {
        let id = self.engine.call(Instant::now(), name, payload, opts)?;
        self.wake();
        Ok(id)
    }

    /// Calls `name` with `payload`, the result as a future to await anywhere (fire and
    /// collect): from another task,
    /// `handle.with_behaviour(|b| b.rpc.call_async(name, payload, opts)).await?.await`.
    /// No event is reported for it.
    pub fn call_async(
        &mut self,
        name: ProcedureName,
        payload: Vec<u8>,
        opts: CallOpts,
    ) -> PendingCall {
        match self.engine.call(Instant::now(), name, payload, opts) {
            Ok(id) => {
                let (tx, rx) = oneshot::channel();
                self.replies.insert(id, tx);
                self.wake();
                PendingCall::waiting(rx)
            }
            Err(e) => PendingCall::done(Err(e)),
        }
    }

    /// Gives up on call `id` (no event, a [`PendingCall`] resolves to
    /// [`CallError::Dropped`]). Returns whether it was under way.
    pub fn cancel(&mut self, id: CallId) -> bool {
        self.replies.remove(&id);
        let cancelled = self.engine.cancel(Instant::now(), id);
        self.wake();
        cancelled
    }

    /// Asks to be told ([`RpcEvent::ProviderAppeared`]) of providers of `name` as they
    /// appear (pull-based: looked up every
    /// [`RpcConfig::interest_interval`](crate::RpcConfig::interest_interval)). Returns
    /// `false` at the limit of interests.
    pub fn add_interest(&mut self, name: ProcedureName) -> bool {
        let added = self.engine.add_interest(Instant::now(), name);
        self.wake();
        added
    }

    /// Stops the interest in `name`.
    pub fn remove_interest(&mut self, name: &ProcedureName) {
        self.engine.remove_interest(name);
    }

    // ----- serving ------------------------------------------------------------------------

    fn serve(
        &mut self,
        peer: PeerId,
        request: Result<WireRequest, crate::WireError>,
        channel: ResponseChannel<WireResponse>,
    ) {
        let refuse = |this: &mut Self, channel: ResponseChannel<WireResponse>, e: RemoteError| {
            this.metrics
                .served
                .get_or_create(&label("outcome", e.kind()))
                .inc();
            let _ = channel.send(Err(e));
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => return refuse(self, channel, RemoteError::BadRequest(e.to_string())),
        };
        if request.realm != self.config.engine.realm {
            return refuse(self, channel, RemoteError::NoSuchProcedure);
        }
        let Some(handler) = self.handlers.pick(&request.name) else {
            return refuse(self, channel, RemoteError::NoSuchProcedure);
        };
        let per_peer = self.serving.get(&peer).copied().unwrap_or(0);
        if per_peer >= self.config.max_handlers_per_peer
            || self.serving_total >= self.config.max_handlers
        {
            return refuse(self, channel, RemoteError::Overloaded);
        }
        *self.serving.entry(peer).or_default() += 1;
        self.serving_total += 1;
        let limit =
            Duration::from_millis(u64::from(request.timeout_ms)).min(self.config.max_call_time);
        let run = handler(request.payload);
        self.running.push(
            async move {
                let result = match tokio::time::timeout(limit, run).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(m)) => Err(RemoteError::Handler(m)),
                    // Dropping the handler's future cancels it.
                    Err(_) => Err(RemoteError::Cancelled),
                };
                Done::Remote {
                    peer,
                    channel,
                    result,
                }
            }
            .boxed(),
        );
    }

    fn call_local(&mut self, call: CallId, attempt: u32, request: WireRequest) {
        let Some(handler) = self.handlers.pick(&request.name) else {
            let e = AttemptError::Remote(RemoteError::NoSuchProcedure);
            self.engine
                .handle_result(Instant::now(), call, attempt, Err(e));
            return;
        };
        let (abort, registration) = AbortHandle::new_pair();
        self.local_calls.insert((call, attempt), abort);
        let run = Abortable::new(handler(request.payload), registration);
        self.running.push(
            async move {
                Done::Local {
                    call,
                    attempt,
                    result: run.await,
                }
            }
            .boxed(),
        );
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Remote {
                peer,
                channel,
                result,
            } => {
                if let Some(n) = self.serving.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.serving.remove(&peer);
                    }
                }
                self.serving_total = self.serving_total.saturating_sub(1);
                let outcome = result.as_ref().map_or_else(|e| e.kind(), |_| "ok");
                self.metrics
                    .served
                    .get_or_create(&label("outcome", outcome))
                    .inc();
                let _ = channel.send(result);
            }
            Done::Local {
                call,
                attempt,
                result,
            } => {
                self.local_calls.remove(&(call, attempt));
                if let Ok(result) = result {
                    let result = result.map_err(|m| AttemptError::Remote(RemoteError::Handler(m)));
                    self.engine
                        .handle_result(Instant::now(), call, attempt, result);
                }
            }
        }
    }

    // ----- the engine's outputs and the parts' events -------------------------------------

    fn on_action(&mut self, action: RpcAction) {
        match action {
            RpcAction::FindProviders { name } => {
                let service = service_name(&self.config.engine.realm, &name);
                let key = kad::discovery::service_key(&service);
                let id = self.parts.kad.get_providers(key);
                self.lookups.insert(id, name);
            }
            RpcAction::Send {
                call,
                attempt,
                peer,
                request,
            } => {
                let id = self
                    .parts
                    .rr
                    .send_request_with(peer, Ok(request), (call, attempt));
                self.remote_attempts.insert((call, attempt), id);
            }
            RpcAction::CallLocal {
                call,
                attempt,
                request,
            } => self.call_local(call, attempt, request),
            RpcAction::Abandon { call, attempt } => {
                if let Some(abort) = self.local_calls.remove(&(call, attempt)) {
                    abort.abort();
                }
                // The exchange ends now, not at `max_call_time`: the provider slot the
                // engine frees is a stream freed, and the provider reads the reset.
                if let Some(id) = self.remote_attempts.remove(&(call, attempt)) {
                    self.parts.rr.cancel_request(id);
                }
            }
        }
    }

    fn on_engine_event(&mut self, event: RpcEvent) {
        if let RpcEvent::CallFinished { id, result, .. } = &event {
            if let Some(tx) = self.replies.remove(id) {
                let _ = tx.send(result.clone());
                return;
            }
        }
        self.events.push_back(Event::Rpc(event));
    }

    fn on_part_event(&mut self, event: PartEvent) {
        let now = Instant::now();
        match event {
            PartEvent::Kad(kad::Event::QueryFinished {
                id,
                result: QueryResult::GetProviders(result),
                ..
            }) if self.lookups.contains_key(&id) => {
                let Some(name) = self.lookups.remove(&id) else {
                    return;
                };
                let providers = result.map(|ok| ok.providers).unwrap_or_default();
                let mut peers = Vec::with_capacity(providers.len());
                for p in providers {
                    self.provider_addrs.insert(p.id, p.addrs, now);
                    peers.push(p.id);
                }
                self.engine.handle_providers(now, &name, peers);
            }
            PartEvent::Kad(e) => self.events.push_back(Event::Kad(e)),
            PartEvent::Rr(e) => self.on_rr_event(now, e),
        }
    }

    fn on_rr_event(
        &mut self,
        now: Instant,
        event: rr::Event<<RpcCodec as rr::Codec>::Request, WireResponse, (CallId, u32)>,
    ) {
        match event {
            rr::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.serve(peer, request, channel),
            rr::Event::Message {
                message:
                    Message::Response {
                        response,
                        user_data: (call, attempt),
                        ..
                    },
                ..
            } => {
                self.remote_attempts.remove(&(call, attempt));
                let result = response.map_err(AttemptError::Remote);
                self.engine.handle_result(now, call, attempt, result);
            }
            rr::Event::OutboundFailure {
                error,
                user_data: (call, attempt),
                ..
            } => {
                self.remote_attempts.remove(&(call, attempt));
                self.engine
                    .handle_result(now, call, attempt, Err(attempt_error(error)));
            }
            rr::Event::InboundFailure { peer, error, .. } => {
                self.events.push_back(Event::InboundFailure { peer, error });
            }
            rr::Event::ResponseSent { .. } => {}
        }
    }
}

/// An exchange's failure as the engine sees it: did the request provably not run?
fn attempt_error(error: OutboundFailure) -> AttemptError {
    match error {
        OutboundFailure::Timeout(_) => AttemptError::Timeout,
        e @ (OutboundFailure::DialFailure(_)
        | OutboundFailure::UnsupportedProtocols
        | OutboundFailure::QueueFull { .. }
        | OutboundFailure::Encode(_)
        | OutboundFailure::Stream(_)) => AttemptError::NotDelivered(e.to_string()),
        e => AttemptError::Lost(e.to_string()),
    }
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        self.parts.protocols()
    }

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.parts
            .handle_pending_inbound_connection(connection, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.parts
            .handle_established_inbound_connection(connection, peer, local_addr, remote_addr)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut addrs = self
            .parts
            .handle_pending_outbound_connection(connection, peer, addresses)?;
        let now = Instant::now();
        if let Some(known) = peer.and_then(|p| self.provider_addrs.get(&p, now)) {
            for a in known {
                if !addrs.contains(a) && !addresses.contains(a) {
                    addrs.push(a.clone());
                }
            }
        }
        Ok(addrs)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.parts
            .handle_established_outbound_connection(connection, peer, addr)
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        self.parts.connection_keep_alive(peer, connection)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::DialFailure {
            peer: Some(peer), ..
        } = &event
        {
            // Stale or false addresses: the next lookup brings fresh ones.
            self.provider_addrs.remove(peer);
        }
        self.parts.on_swarm_event(event);
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        self.parts.on_inbound_stream(stream);
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        self.parts.on_outbound_stream(result);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        self.waker = Some(cx.waker().clone());
        loop {
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(e));
            }
            let now = Instant::now();
            if let Some(table) = &self.rtt {
                if now >= self.next_rtt_poll {
                    self.next_rtt_poll = now + RTT_POLL_INTERVAL;
                    for (peer, rtt) in table.snapshot() {
                        self.engine.handle_rtt(peer, rtt);
                    }
                }
            }
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            let mut progressed = false;
            while let Some(action) = self.engine.poll_action() {
                self.on_action(action);
                progressed = true;
            }
            while let Some(event) = self.engine.poll_event() {
                self.on_engine_event(event);
                progressed = true;
            }
            while let Poll::Ready(Some(done)) = self.running.poll_next_unpin(cx) {
                self.on_done(done);
                progressed = true;
            }
            if let Poll::Ready(command) = self.parts.poll(cx) {
                match command.into_event() {
                    Ok(ev) => self.on_part_event(ev),
                    // Every other command passes through unchanged.
                    Err(command) => return Poll::Ready(command),
                }
                continue;
            }
            if progressed || !self.events.is_empty() {
                continue;
            }
            let next = self
                .engine
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            if self.timer.poll_at(next, cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;
    use meshwire_swarm::DialError;

    fn behaviour(config: Config) -> Behaviour {
        let local = Keypair::from_seed_for_tests(0).peer_id();
        Behaviour::new(kad::Behaviour::new(local, kad::Config::default()), config)
    }

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/udp/{port}/quic-v1").parse().unwrap()
    }

    #[test]
    fn provider_addresses_are_dialed_until_a_dial_fails_and_bounded_by_config() {
        let mut b = behaviour(Config {
            max_provider_addrs: 2,
            max_addrs_per_provider: 1,
            ..Config::default()
        });
        let now = Instant::now();
        let peers: Vec<PeerId> = (1..=3)
            .map(|i| Keypair::from_seed_for_tests(i).peer_id())
            .collect();
        for (i, p) in peers.iter().enumerate() {
            b.provider_addrs
                .insert(*p, vec![addr(i as u16), addr(99)], now);
        }
        // Bounded: the oldest went for the newest, each with one address.
        assert_eq!(b.provider_addrs_len(), 2);
        let dial = |b: &mut Behaviour, p: PeerId| {
            b.handle_pending_outbound_connection(ConnectionId::next(), Some(p), &[])
                .unwrap()
        };
        assert!(dial(&mut b, peers[0]).is_empty());
        assert_eq!(dial(&mut b, peers[2]), [addr(2)]);
        // A failed dial drops the peer's addresses.
        let error = DialError::NoAddresses;
        b.on_swarm_event(FromSwarm::DialFailure {
            peer: Some(peers[2]),
            connection: ConnectionId::next(),
            error: &error,
        });
        assert!(dial(&mut b, peers[2]).is_empty());
        assert_eq!(dial(&mut b, peers[1]), [addr(1)]);
        assert_eq!(b.provider_addrs_len(), 1);
    }
}
