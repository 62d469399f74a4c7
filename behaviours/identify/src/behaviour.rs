//! [`Behaviour`]: identify every connection, answer the remote's requests, push updates.
//!
//! The pieces: [`state`](crate::state) keeps connections, the info cache and the re-identify
//! schedule; [`exchange`](crate::exchange) runs the stream exchanges as [`Tasks`];
//! [`local`](crate::local) knows what we advertise. This module wires them to the swarm.

use std::collections::HashMap;
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{Connections, Outbox, Tasks};
use meshwire_swarm::{
    ConnectionDenied, FromSwarm, InboundStream, NetworkBehaviour, OpenStream, OutboundStreamResult,
    StreamProtocol, ToSwarm,
};
use multiaddr::Multiaddr;
use tokio::time::Instant;

use crate::config::{Config, MAX_DIAL_ADDRESSES, MAX_INBOUND_STREAMS_PER_CONNECTION};
use crate::exchange::{self, Exchange, Key, Output, BACKSTOP};
use crate::local::{new_peer_addrs, LocalInfo};
use crate::protocol::{wire, Error, Info, PROTOCOL_NAME, PUSH_PROTOCOL_NAME};
use crate::state::{Conn, PeerCache, Schedule};

/// Delay before an identify request that found the outbox or the exchanges full is retried.
const RETRY_WHEN_BUSY: Duration = Duration::from_secs(1);

/// What [`Behaviour`] reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A peer answered our identify request.
    Received {
        /// The peer.
        peer: PeerId,
        /// The connection it answered on.
        connection: ConnectionId,
        /// What it told us.
        info: Info,
    },
    /// We answered a peer's identify request.
    Sent {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
    },
    /// A peer pushed an update of its info; `info` is our view after applying it (unlike
    /// rust-libp2p, where `Pushed` reports a push we sent).
    Pushed {
        /// The peer.
        peer: PeerId,
        /// The connection it pushed on.
        connection: ConnectionId,
        /// Its info, the push applied.
        info: Info,
    },
    /// We pushed our info to a peer.
    PushSent {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
    },
    /// An exchange with a peer failed.
    Error {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// What went wrong.
        error: Error,
    },
}

/// The identify protocol for all peers: asks every new connection who is on the other end,
/// answers the remote's questions, re-identifies every [`Config::interval`], and pushes
/// updates when [`Config::push_listen_addr_updates`] is on.
///
/// Accepts `/ipfs/id/1.0.0` and `/ipfs/id/push/1.0.0`. On every [`Event::Received`] it also
/// reports the address the remote observed for us as
/// [`ToSwarm::NewExternalAddrCandidate`] and each newly learnt listen address of the peer as
/// [`ToSwarm::NewExternalAddrOfPeer`]. See the crate documentation for an example.
pub struct Behaviour {
    config: Config,
    /// What we advertise.
    local: LocalInfo,
    connections: HashMap<ConnectionId, Conn>,
    /// Open connections of each peer.
    peers: Connections,
    cache: PeerCache,
    /// Commands for the swarm; a stream request keeps its connection and exchange.
    outbox: Outbox<Event, (ConnectionId, Exchange)>,
    /// The stream exchanges running.
    exchanges: Tasks<Key, Output>,
    /// Re-identify deadlines; entries a connection no longer expects are skipped.
    schedule: Schedule,
    /// Pushes delayed for arriving within [`Config::min_push_interval`] of the last.
    pushes_delayed: u64,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("config", &self.config)
            .field("connections", &self.connections.len())
            .field("exchanges", &self.exchanges)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A behaviour with `config`.
    pub fn new(config: Config) -> Self {
        Behaviour {
            cache: PeerCache::new(config.cache_size),
            outbox: Outbox::new(config.max_queued),
            exchanges: Tasks::new(config.max_exchanges),
            config,
            local: LocalInfo::default(),
            connections: HashMap::new(),
            peers: Connections::default(),
            schedule: Schedule::default(),
            pushes_delayed: 0,
        }
    }

    /// Pushes delayed so far because they came within [`Config::min_push_interval`] of the
    /// last push on their connection.
    pub fn pushes_delayed(&self) -> u64 {
        self.pushes_delayed
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The latest info of a connected peer, if it has answered (and is still cached).
    pub fn info(&self, peer: &PeerId) -> Option<&Info> {
        self.cache.get(peer)
    }

    /// Pushes our info to these peers now (those connected), whatever
    /// [`Config::push_listen_addr_updates`] says.
    pub fn push<I: IntoIterator<Item = PeerId>>(&mut self, peers: I) {
        for peer in peers {
            self.push_to(peer);
        }
    }

    /// Queues a command; at the limit it is dropped, with a log.
    fn emit(&mut self, command: ToSwarm<Event>) {
        if let Err(full) = self.outbox.push(command) {
            tracing::warn!(
                limit = full.limit,
                "identify: command queue full; dropping a command"
            );
        }
    }

    /// Runs an exchange; `false` (and the future dropped) if the limit of exchanges is reached.
    fn spawn(&mut self, key: Key, fut: impl Future<Output = Output> + Send + 'static) -> bool {
        self.spawn_after(key, Duration::ZERO, fut)
    }

    /// [`Behaviour::spawn`] for an exchange that first waits `delay`.
    fn spawn_after(
        &mut self,
        key: Key,
        delay: Duration,
        fut: impl Future<Output = Output> + Send + 'static,
    ) -> bool {
        let fut = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            fut.await
        };
        match self
            .exchanges
            .try_push(key, delay + self.config.timeout + BACKSTOP, fut)
        {
            Ok(()) => true,
            Err(full) => {
                tracing::debug!(
                    peer = %key.peer,
                    connection = %key.connection,
                    exchange = ?key.exchange,
                    limit = full.limit,
                    "identify: too many exchanges running"
                );
                false
            }
        }
    }

    fn request_identify(&mut self, connection: ConnectionId) {
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        if c.identify_outstanding() {
            return;
        }
        let open = OpenStream::new(c.peer, PROTOCOL_NAME)
            .on_connection(connection)
            .no_dial();
        tracing::trace!(peer = %c.peer, %connection, "identify: requesting");
        c.next_identify = None;
        match self
            .outbox
            .open_stream(open, (connection, Exchange::Identify))
        {
            Ok(id) => c.identify_request = Some(id),
            Err(full) => {
                tracing::debug!(peer = %c.peer, %connection, limit = full.limit, "identify: command queue full; retrying later");
                self.schedule_identify_in(connection, RETRY_WHEN_BUSY);
            }
        }
    }

    /// Plans the next identify request of `connection` after [`Config::interval`].
    fn schedule_identify(&mut self, connection: ConnectionId) {
        if !self.config.interval.is_zero() {
            self.schedule_identify_in(connection, self.config.interval);
        }
    }

    fn schedule_identify_in(&mut self, connection: ConnectionId, delay: Duration) {
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        let at = Instant::now() + delay;
        c.next_identify = Some(at);
        self.schedule.insert(at, connection);
    }

    /// Pushes to `peer` on its oldest connection, unless it told us it does not take pushes.
    fn push_to(&mut self, peer: PeerId) {
        if let Some(info) = self.cache.get(&peer) {
            if !info.protocols.contains(&PUSH_PROTOCOL_NAME) {
                return;
            }
        }
        let Some(&connection) = self.peers.of(&peer).first() else {
            return;
        };
        self.push_on(connection);
    }

    fn push_on(&mut self, connection: ConnectionId) {
        let Some(c) = self.connections.get_mut(&connection) else {
            return;
        };
        if c.push_outstanding() {
            c.push_again = true;
            return;
        }
        let open = OpenStream::new(c.peer, PUSH_PROTOCOL_NAME)
            .on_connection(connection)
            .no_dial();
        c.push_again = false;
        tracing::trace!(peer = %c.peer, %connection, "identify: pushing");
        match self.outbox.open_stream(open, (connection, Exchange::Push)) {
            Ok(id) => c.push_request = Some(id),
            Err(full) => {
                tracing::debug!(peer = %c.peer, %connection, limit = full.limit, "identify: command queue full; push dropped");
            }
        }
    }

    /// After a possible change of what we advertise: push if it changed and we are
    /// configured to.
    fn after_local_change(&mut self, changed: bool) {
        if changed && self.config.push_listen_addr_updates {
            let peers: Vec<PeerId> = self.peers.peers().copied().collect();
            for peer in peers {
                self.push_to(peer);
            }
        }
    }

    fn on_exchange_done(&mut self, key: Key, result: Output) {
        let Key {
            peer,
            connection,
            exchange,
        } = key;
        let Some(c) = self.connections.get_mut(&connection) else {
            tracing::debug!(%peer, %connection, "identify: exchange ended after its connection closed");
            return;
        };
        match exchange {
            Exchange::Identify => {
                c.identify_running = false;
                self.schedule_identify(connection);
                let limits = self.config.limits();
                let info = result
                    .and_then(|msg| msg.ok_or(Error::NoMessage))
                    .and_then(|msg| Info::from_wire(&peer, msg, limits));
                match info {
                    Ok(info) => self.on_received(peer, connection, info),
                    Err(error) => self.report_error(peer, connection, error),
                }
            }
            Exchange::Answer => {
                c.inbound = c.inbound.saturating_sub(1);
                match result {
                    Ok(_) => {
                        tracing::debug!(%peer, %connection, "identify: answered");
                        self.emit(ToSwarm::GenerateEvent(Event::Sent { peer, connection }));
                    }
                    Err(error) => self.report_error(peer, connection, error),
                }
            }
            Exchange::Push => {
                c.push_running = false;
                let again = std::mem::take(&mut c.push_again);
                match result {
                    Ok(_) => {
                        tracing::debug!(%peer, %connection, "identify: pushed");
                        self.emit(ToSwarm::GenerateEvent(Event::PushSent { peer, connection }));
                    }
                    Err(error) => self.push_failed(peer, connection, error),
                }
                if again {
                    self.push_on(connection);
                }
            }
            Exchange::PushReceived => {
                c.inbound = c.inbound.saturating_sub(1);
                let merged = result
                    .and_then(|msg| msg.ok_or(Error::NoMessage))
                    .and_then(|msg| self.apply_push(peer, msg));
                match merged {
                    Ok(info) => {
                        tracing::debug!(%peer, %connection, "identify: received a push");
                        self.learn(peer, connection, &info);
                        self.emit(ToSwarm::GenerateEvent(Event::Pushed {
                            peer,
                            connection,
                            info,
                        }));
                    }
                    Err(error) => self.report_error(peer, connection, error),
                }
            }
        }
    }

    /// The peer's info with its push `msg` applied.
    fn apply_push(&self, peer: PeerId, msg: wire::Identify) -> Result<Info, Error> {
        let mut info = match self.cache.get(&peer) {
            Some(info) => info.clone(),
            None => Info {
                public_key: peer.public_key().ok_or(Error::MissingPublicKey)?,
                protocol_version: String::new(),
                agent_version: String::new(),
                listen_addrs: Vec::new(),
                protocols: Vec::new(),
                observed_addr: Multiaddr::empty(),
            },
        };
        info.apply_push(&peer, msg, self.config.limits())?;
        Ok(info)
    }

    /// A push of ours failed: a peer that does not take pushes is no error.
    fn push_failed(&mut self, peer: PeerId, connection: ConnectionId, error: Error) {
        if error.is_unsupported() {
            tracing::debug!(%peer, %connection, "identify: peer does not take pushes");
        } else {
            self.report_error(peer, connection, error);
        }
    }

    fn on_received(&mut self, peer: PeerId, connection: ConnectionId, info: Info) {
        tracing::debug!(
            %peer,
            %connection,
            agent = %info.agent_version,
            observed = %info.observed_addr,
            "identify: received info"
        );
        let observed = info.observed_addr.clone();
        self.learn(peer, connection, &info);
        self.emit(ToSwarm::GenerateEvent(Event::Received {
            peer,
            connection,
            info,
        }));
        // An address observed over a relayed connection names the relay's circuit, not a
        // way to reach us directly: it is no candidate for our external address.
        if !observed.is_empty() && !meshwire_transport::is_circuit_addr(&observed) {
            self.emit(ToSwarm::NewExternalAddrCandidate(observed));
        }
    }

    /// Shares what a peer told us: its new listen addresses go to the swarm's address book,
    /// its protocols to every behaviour (kademlia adds DHT servers to its routing table from
    /// them); its info is cached.
    fn learn(&mut self, peer: PeerId, connection: ConnectionId, info: &Info) {
        let fresh: Vec<Multiaddr> = new_peer_addrs(self.cache.get(&peer), info)
            .cloned()
            .collect();
        for addr in fresh {
            self.emit(ToSwarm::NewExternalAddrOfPeer { peer, addr });
        }
        self.emit(ToSwarm::RemoteProtocolsChanged {
            peer,
            connection,
            protocols: info.protocols.clone(),
        });
        self.cache.insert(peer, info.clone());
    }

    fn report_error(&mut self, peer: PeerId, connection: ConnectionId, error: Error) {
        tracing::debug!(%peer, %connection, %error, "identify: exchange failed");
        self.emit(ToSwarm::GenerateEvent(Event::Error {
            peer,
            connection,
            error,
        }));
    }

    /// A stream request of ours failed.
    fn stream_failed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        exchange: Exchange,
        error: Error,
    ) {
        match exchange {
            Exchange::Push => {
                let again = self
                    .connections
                    .get_mut(&connection)
                    .is_some_and(|c| std::mem::take(&mut c.push_again));
                self.push_failed(peer, connection, error);
                if again {
                    self.push_on(connection);
                }
            }
            _ => {
                self.schedule_identify(connection);
                self.report_error(peer, connection, error);
            }
        }
    }

    fn on_connection_closed(&mut self, connection: ConnectionId) {
        if let Some(c) = self.connections.remove(&connection) {
            for id in [c.identify_request, c.push_request].into_iter().flatten() {
                self.outbox.take_stream(id);
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL_NAME, PUSH_PROTOCOL_NAME]
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(info) = peer.and_then(|p| self.cache.get(&p)) else {
            return Ok(Vec::new());
        };
        Ok(info
            .listen_addrs
            .iter()
            .filter(|a| !addresses.contains(a))
            .take(MAX_DIAL_ADDRESSES)
            .cloned()
            .collect())
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let Some(peer) = self
            .peers
            .on_swarm_event(&event)
            .and_then(|change| change.last_closed())
        {
            self.cache.remove(&peer);
        }
        match event {
            FromSwarm::ConnectionEstablished {
                peer,
                connection,
                endpoint,
                ..
            } => {
                self.connections
                    .insert(connection, Conn::new(peer, endpoint.remote_addr().clone()));
                self.request_identify(connection);
            }
            FromSwarm::ConnectionClosed { connection, .. } => self.on_connection_closed(connection),
            other => {
                let changed = self.local.on_swarm_event(&other);
                self.after_local_change(changed);
            }
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let InboundStream {
            peer,
            connection,
            protocol,
            mut stream,
        } = inbound;
        let Some(c) = self.connections.get(&connection) else {
            tracing::debug!(%peer, %connection, "identify: stream on an unknown connection; resetting");
            stream.reset();
            return;
        };
        if c.inbound >= MAX_INBOUND_STREAMS_PER_CONNECTION || !self.exchanges.has_room() {
            tracing::debug!(%peer, %connection, %protocol, inbound = c.inbound, "identify: too many inbound streams; resetting");
            stream.reset();
            return;
        }
        let limit = self.config.timeout;
        let max = self.config.max_message_size;
        let started = if protocol == PROTOCOL_NAME {
            let frame = self.local.frame(&self.config, Some(&c.remote_addr));
            let key = Key::new(peer, connection, Exchange::Answer);
            self.spawn(key, exchange::send(stream, frame, limit))
        } else if protocol == PUSH_PROTOCOL_NAME {
            // One push per interval per connection: a push arriving sooner waits, unread,
            // for its turn (at most MAX_INBOUND_STREAMS_PER_CONNECTION wait at once).
            let now = Instant::now();
            let slot = c
                .last_push
                .map_or(now, |t| (t + self.config.min_push_interval).max(now));
            let delay = slot - now;
            if !delay.is_zero() {
                tracing::debug!(%peer, %connection, ?delay, "identify: push sooner than the interval; delayed");
                self.pushes_delayed += 1;
            }
            if let Some(c) = self.connections.get_mut(&connection) {
                c.last_push = Some(slot);
            }
            let key = Key::new(peer, connection, Exchange::PushReceived);
            self.spawn_after(key, delay, exchange::receive_push(stream, max, limit))
        } else {
            tracing::debug!(%peer, %connection, %protocol, "identify: stream of a foreign protocol; resetting");
            stream.reset();
            return;
        };
        if let Some(c) = self.connections.get_mut(&connection).filter(|_| started) {
            c.inbound += 1;
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let Some((connection, exchange)) = self.outbox.take_stream(result.id) else {
            return;
        };
        let peer = result.peer;
        let Some(c) = self.connections.get_mut(&connection) else {
            if let Ok(mut out) = result.result {
                out.stream.reset();
            }
            return;
        };
        let push = exchange == Exchange::Push;
        if push {
            c.push_request = None;
        } else {
            c.identify_request = None;
        }
        let mut stream = match result.result {
            Ok(out) => out.stream,
            Err(e) => return self.stream_failed(peer, connection, exchange, Error::Stream(e)),
        };
        if !self.exchanges.has_room() {
            tracing::debug!(%peer, %connection, ?exchange, "identify: too many exchanges running; resetting our stream");
            stream.reset();
            if push {
                c.push_again = false;
            } else {
                self.schedule_identify_in(connection, RETRY_WHEN_BUSY);
            }
            return;
        }
        let frame = push.then(|| self.local.frame(&self.config, Some(&c.remote_addr)));
        let (limit, max) = (self.config.timeout, self.config.max_message_size);
        let key = Key::new(peer, connection, exchange);
        let started = match frame {
            Some(frame) => self.spawn(key, exchange::send(stream, frame, limit)),
            None => self.spawn(key, exchange::request(stream, max, limit)),
        };
        if let Some(c) = self.connections.get_mut(&connection) {
            if push {
                c.push_running = started;
            } else {
                c.identify_running = started;
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>> {
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            if let Poll::Ready((key, result)) = self.exchanges.poll_next(cx) {
                self.on_exchange_done(key, result.unwrap_or_else(|t| Err(t.into())));
                continue;
            }
            if let Poll::Ready((at, connection)) = self.schedule.poll_due(cx) {
                let due = self
                    .connections
                    .get(&connection)
                    .is_some_and(|c| c.next_identify == Some(at));
                if due {
                    self.request_identify(connection);
                }
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

    #[tokio::test]
    async fn a_flood_of_addresses_and_protocols_is_capped_end_to_end() {
        let key = Keypair::generate();
        let config = Config::from_public_key(key.public())
            .with_max_listen_addrs(10)
            .with_max_protocols(5);
        let mut b = Behaviour::new(config);
        let remote = Keypair::generate();
        let peer = remote.peer_id();
        let connection = ConnectionId::next();
        let mut conn = Conn::new(peer, Multiaddr::empty());
        conn.identify_running = true;
        b.connections.insert(connection, conn);
        // What ten merged 4 KiB frames can carry: tens of thousands of distinct entries.
        let msg = wire::Identify {
            public_key: Some(remote.public().encode_protobuf()),
            listen_addrs: (0..30_000u32)
                .map(|n| {
                    let addr: Multiaddr = format!("/ip4/{}", std::net::Ipv4Addr::from(n))
                        .parse()
                        .unwrap();
                    addr.to_vec()
                })
                .collect(),
            protocols: (0..10_000).map(|n| format!("/p/{n}")).collect(),
            ..Default::default()
        };
        b.on_exchange_done(
            Key::new(peer, connection, Exchange::Identify),
            Ok(Some(msg)),
        );
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let (mut announced, mut received) = (0, None);
        while let Poll::Ready(command) = b.outbox.poll(&mut cx) {
            match command {
                ToSwarm::NewExternalAddrOfPeer { .. } => announced += 1,
                ToSwarm::GenerateEvent(Event::Received { info, .. }) => received = Some(info),
                _ => {}
            }
        }
        let info = received.expect("the info is received");
        assert_eq!(announced, 10);
        assert_eq!(info.listen_addrs.len(), 10);
        assert_eq!(info.protocols.len(), 5);
        assert_eq!(b.info(&peer), Some(&info));
    }

    #[test]
    fn dial_addresses_come_from_the_cache() {
        let key = Keypair::generate();
        let mut b = Behaviour::new(Config::from_public_key(key.public()));
        let mut i = Info {
            public_key: Keypair::from_secret_bytes([9; 32]).public(),
            protocol_version: String::new(),
            agent_version: String::new(),
            listen_addrs: Vec::new(),
            protocols: Vec::new(),
            observed_addr: Multiaddr::empty(),
        };
        i.listen_addrs = (0..20)
            .map(|n| format!("/ip4/10.0.1.{n}/udp/1/quic-v1").parse().unwrap())
            .collect();
        let peer = i.peer_id();
        b.cache.insert(peer, i.clone());
        let extra = b
            .handle_pending_outbound_connection(
                ConnectionId::next(),
                Some(peer),
                &i.listen_addrs[..1],
            )
            .unwrap();
        assert_eq!(extra.len(), MAX_DIAL_ADDRESSES);
        assert!(!extra.contains(&i.listen_addrs[0]));
        assert!(b
            .handle_pending_outbound_connection(ConnectionId::next(), None, &[])
            .unwrap()
            .is_empty());
    }
}
