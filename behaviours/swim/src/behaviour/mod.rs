//! [`Behaviour`]: the SWIM engine driven by a meshwire [`Swarm`](meshwire_swarm::Swarm) over QUIC.
//!
//! # What goes where
//!
//! - **Datagrams** (ping, ack, ping-req, nack, gossip) are unreliable QUIC datagrams on a
//!   connection with the member. The behaviour keeps the transport
//!   [`Connection`](meshwire_transport::Connection) handle of
//!   every connection it is told of ([`FromSwarm::ConnectionEstablished`]), sends on the
//!   peer's preferred connection (see below), and reads each connection's datagrams with one
//!   `read_datagram` future at a time, handing them to the engine with the connection's
//!   authenticated peer as sender.
//! - **No datagrams** (a relayed connection: Noise and Yamux over a relay's stream, whose
//!   `max_datagram_size` is `None`): when none of the peer's connections carries datagrams,
//!   the same message bytes go as frames on one long-lived stream per peer, negotiated as
//!   [`STREAM_PROTOCOL`] and opened on the peer's best connection without dialing. A peer
//!   with both kinds of connection gets datagrams. The frames are bounded like datagrams
//!   (sent: at most the MTU; read: the engine's datagram limit, checked before buffering),
//!   and a frame read from a remote's stream takes the very path of an inbound datagram
//!   (decoding, realm check, engine, counters, keep-alive). Everything is bounded: the
//!   queue per peer ([`Config::max_queued_fallback_messages_per_peer`]), our streams
//!   ([`Config::max_fallback_streams`]), remotes' streams
//!   ([`Config::max_inbound_fallback_streams`], [`Config::max_inbound_fallback_streams_per_peer`]),
//!   an idle stream's life ([`Config::fallback_stream_idle_timeout`]) and each write
//!   ([`Config::fallback_stream_write_timeout`]); see `streams`. The cost is head-of-line
//!   blocking: a message delayed on the relay path holds back those behind it, so probe
//!   round trips over a relay reflect the relay path.
//! - **No connection to the target**: if the peer is a live member or a seed, the datagram
//!   waits in a small per-peer queue ([`Config::max_queued_datagrams_per_peer`], oldest
//!   dropped first; at most [`Config::max_queued_peers`] peers; entries older than
//!   [`Config::queued_datagram_ttl`] are swept on the timer path) while the behaviour dials
//!   the peer ([`ToSwarm::Dial`]) at the addresses of its member metadata (and former
//!   members' and the join seeds' addresses). Datagrams for anyone else (gossip to a member
//!   held dead) are sent only over an existing connection. Any failed dial of the peer drops
//!   its queue, and a failed dial of ours backs off the peer's dials
//!   ([`Config::dial_backoff`], doubling to [`Config::dial_backoff_max`]) until a connection
//!   or alive news. Gossip of a dissemination round never starts a dial (it waits briefly for
//!   a connection that comes anyway). Newly learned live members are dialed ahead of their
//!   first probe by the side with the smaller peer id (so a pair handshakes once), at most
//!   [`Config::warm_dials_per_period`] per protocol period (all at once bunched a cluster's
//!   handshakes together); and when a probe's ping has to wait for the first connection with a
//!   new member, the engine is told ([`SwimEngine::handle_probe_unsent`], then [`SwimEngine::handle_probe_sent`] when
//!   it goes out), so the probe's timers run from the send and a ping that never went out in
//!   its period is not a failed probe (once per member; members we were connected with are
//!   probed as usual).
//! - **Push-pull** (join, anti-entropy): a stream negotiated as [`PROTOCOL`], opened with
//!   [`ToSwarm::OpenStream`] (the swarm dials if needed); the initiator writes one framed
//!   request and finishes its side, the responder reads it (bounded by the engine's
//!   [`Limits`](crate::Limits), within [`Config::swim`]`.push_pull_timeout`), writes one framed
//!   answer and finishes. A failure of any step is reported to the engine
//!   ([`SwimEngine::handle_push_pull_failed`]). Frames are read with the toolkit's
//!   [`read_frame_with`](meshwire_swarm::toolkit::read_frame_with) (the length is checked and
//!   taken from the inbound byte budget before anything is buffered), each exchange runs
//!   within [`with_timeout`](meshwire_swarm::toolkit::with_timeout) in a bounded
//!   `Tasks` set, and commands for the swarm go through an
//!   `Outbox` that keeps each push-pull until its stream
//!   arrives.
//! - **Timers**: one tokio `Sleep` armed at [`SwimEngine::poll_timeout`] (and at the next rejoin
//!   check and warm-up dial), checked on every `poll` after at most 16 datagrams, so that
//!   sustained input cannot starve probes and suspicion timers.
//! - **Keep-alive**: [`NetworkBehaviour::connection_keep_alive`] is `true` for the preferred
//!   connection of every live (alive or suspect) member, so the swarm's idle rule never
//!   closes it, and for any connection that carried a SWIM message of one of our realms
//!   (decoded; junk does not count) from the peer within
//!   [`Config::traffic_keep_alive`] (the peer uses it, e.g. a member that learned of us before
//!   we learned of it). Connections to dead, left or unknown peers are left to the idle rule.
//!   Of two connections between the same pair (simultaneous dials) the preferred one is the
//!   one dialed by the peer with the smaller id, which both sides agree on; datagrams go over
//!   it, so the duplicate idles out. A connection with datagrams comes before one without
//!   (a direct connection before a relayed one): while the peer has one, its connections
//!   without datagrams are left to the idle rule. QUIC's own keep-alive and idle timeout
//!   ([`QuicConfig`](meshwire_transport::quic::QuicConfig)) are independent of SWIM: they keep
//!   a wanted connection open or close a dead one, while SWIM judges members by its own
//!   datagrams only. Live members' peers are tagged [`CONN_MANAGER_TAG`]
//!   ([`Config::conn_manager_tag_value`]) in the swarm's connection manager and untagged when
//!   they fail or leave; nothing is protected. SWIM keeps a full mesh, so a realm larger than
//!   the connection manager's high watermark (192 by default) needs higher watermarks.
//! - **Local metadata**: the node announces its listen addresses (those with a specific IP;
//!   loopback ones only when it has no other) and confirmed external addresses, plus
//!   [`Config::data`], and re-announces (with a new
//!   incarnation) when they change, so members can dial it.
//! - **Rejoin**: every [`Config::rejoin_interval`], a node that sees no live member in a
//!   realm (cut off, every seed unreachable at start-up) rejoins ([`SwimEngine::rejoin`]) through
//!   its seeds, if any, and through up to 3 members it holds dead or former members, so a
//!   seed (which never joined through anyone) or a node whose seeds are gone finds its way
//!   back too. Members it is merely partitioned from are healed by the anti-entropy
//!   push-pulls.
//!
//! Bytes from the network are bounded before they are buffered (datagrams by QUIC and the
//! engine's limits, push-pull frames by [`Config::swim`]`.max_push_pull_bytes`), inbound
//! push-pull streams are limited ([`Config::max_inbound_push_pulls`],
//! [`Config::max_inbound_push_pulls_per_peer`], and [`Config::max_inbound_push_pull_bytes`]
//! buffered at once over all of them), so are fallback streams (above), and nothing from the
//! network can panic.
//!
//! SWIM assumes it is the only reader of QUIC datagrams on the swarm's connections.
//!
//! The code: [`config`](Config) (settings, errors, IO counters), `datagrams` (connections and
//! their readers), `streams` (the fallback streams for connections without datagrams),
//! `queues` (datagrams waiting for a dial, dial backoff, warm-up dials), `push_pull` (the
//! push-pull exchanges), `metadata` (the announced addresses), `rejoin` (seeds and
//! rejoining); this module ties them to the engine and the swarm.

use std::collections::HashMap;
use std::collections::HashSet;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use meshwire_core::{ConnectionId, Keypair, PeerId};
use meshwire_swarm::toolkit::{ConnectionChange, Outbox, Tasks};
use meshwire_swarm::{
    ConnManagerCommand, ConnectionDenied, DialError, DialOpts, FromSwarm, InboundStream,
    NetworkBehaviour, OutboundStreamResult, PeerCondition, StreamProtocol, Timer, ToSwarm,
};
use meshwire_transport::ConnectionError;
use multiaddr::Multiaddr;
use tokio::time::Instant;

use crate::engine::{Stats, SwimEngine, SwimEvent, TransmitKind, UnknownRealm};
use crate::member::{Member, MetaError, NodeMeta};
use crate::realm::Realm;
use crate::wire::Body;
use crate::wire::{Message, PROTOCOL_NAME, STREAM_PROTOCOL_NAME};

mod config;
mod datagrams;
mod metadata;
mod push_pull;
mod queues;
mod rejoin;
mod streams;
#[cfg(test)]
mod tests;

pub use self::config::{Config, Error, IoStats, CONN_MANAGER_TAG, DEFAULT_DATAGRAM_MTU, MAX_SEEDS};
use self::datagrams::{kind_of, Links, Sent};
use self::metadata::LocalAddrs;
pub use self::push_pull::PushPullError;
use self::push_pull::{AnswerKey, Inbound, OutboundPushPull, Request};
use self::queues::{Dials, WarmDials};
use self::rejoin::Seeds;
use self::streams::Fallback;

/// The events of a [`Behaviour`]: the engine's [`SwimEvent`]s, one for one (member joined or
/// back, updated, suspected, refuted, failed, left, join failed); the behaviour adds none of
/// its own.
pub type Event = SwimEvent;

/// The stream protocol of push-pull exchanges, `/meshwire/swim/2.0.0`.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_NAME);

/// The stream protocol of the fallback streams, `/meshwire/swim/2.0.0/stream`: the messages
/// otherwise sent as datagrams, one frame each, on one stream per peer none of whose
/// connections carries datagrams (relayed connections).
pub const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new(STREAM_PROTOCOL_NAME);

/// Work items handled per call of `poll` before yielding to the swarm's other work.
const POLL_BUDGET: usize = 128;

/// Datagrams handled in a row before the timers are checked again.
const DATAGRAM_BATCH: usize = 16;

/// Our push-pulls in flight at most, from stream request to answer (the engine itself keeps
/// far fewer).
const MAX_PUSH_PULLS_IN_FLIGHT: usize = 256;

/// Commands for the swarm queued at most (events, dials, tags, stream requests awaiting
/// their stream). Engine events wait in the engine while the outbox is full.
const MAX_COMMANDS: usize = 4096;

/// How much longer than its own time limit a push-pull task may run before the task set
/// drops it (the exchange's own limit resets the stream first).
const TASK_GRACE: Duration = Duration::from_secs(1);

/// The SWIM membership [`NetworkBehaviour`]: a [`SwimEngine`] driven over the swarm's QUIC
/// connections (and, for peers reachable only without datagrams, over fallback streams).
/// See the [module documentation](self) for what goes where and the
/// [crate documentation](crate) for an example with real swarms.
///
/// Its events are the engine's [`SwimEvent`]s, one for one: member joined (or back),
/// updated, suspected, refuted (alive again), failed, left, and join failed.
pub struct Behaviour {
    engine: SwimEngine,
    config: Config,
    local: PeerId,
    /// Connections, their datagram readers, sending.
    links: Links,
    /// Streams for peers whose connections carry no datagrams.
    fallback: Fallback,
    /// Queued datagrams, our dials, dial backoffs.
    dials: Dials,
    /// Newly learned live members to dial ahead of their first probe.
    warm: WarmDials,
    /// Commands for the swarm, with the push-pull of each stream request of ours.
    outbox: Outbox<Event, OutboundPushPull>,
    /// Push-pulls of ours from stream request to answer, by realm and peer: the id of the
    /// newest exchange (an older one's late outcome is ignored).
    push_pulls_in_flight: HashMap<(Realm, PeerId), u64>,
    next_exchange: u64,
    /// Our exchanges, from stream to answer.
    answers: Tasks<AnswerKey, Result<Vec<u8>, PushPullError>>,
    /// Remotes' requests being read.
    requests: Tasks<PeerId, Result<Request, PushPullError>>,
    /// Our answers to remotes' requests being written.
    serving: Tasks<PeerId, Result<(), PushPullError>>,
    inbound: Inbound,
    /// Peers tagged in the connection manager (live in some realm).
    tagged: HashSet<PeerId>,
    /// Live members whose probes get no grace for a connection being set up: we have been
    /// connected with them since they became live, or a probe of them already had it.
    no_probe_grace: HashSet<PeerId>,
    seeds: Seeds,
    next_rejoin: Option<Instant>,
    addrs: LocalAddrs,
    announced: NodeMeta,
    /// Created on first use, inside the runtime that polls the behaviour.
    sleep: Timer,
    io: IoStats,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("local", &self.local)
            .field("engine", &self.engine)
            .field("connections", &self.links.len())
            .field("fallback_streams", &self.fallback.len())
            .field("io", &self.io)
            .finish_non_exhaustive()
    }
}

fn now() -> Instant {
    Instant::now()
}

impl Behaviour {
    /// A behaviour for the node of `key` (the swarm's identity) in `realms`. The engine signs
    /// the node's alive records with it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid [`Config::swim`] or realm list, [`Error::Meta`] if
    /// [`Config::data`] is too large to announce.
    pub fn new(
        key: &Keypair,
        realms: impl IntoIterator<Item = Realm>,
        config: Config,
    ) -> Result<Self, Error> {
        let local_peer_id = key.peer_id();
        let meta = NodeMeta::new(Vec::new(), config.data.clone())?;
        let seed = config.rng_seed.unwrap_or_else(rand::random);
        // Every node checks: one without seeds (a seed itself) rejoins through the members it
        // last knew.
        let next_rejoin = config.rejoin_interval.map(|i| now() + i);
        let engine = SwimEngine::new(
            key,
            realms,
            meta.clone(),
            config.swim.clone(),
            seed,
            now().into_std(),
        )?;
        let inbound = config.max_inbound_push_pulls.max(1);
        Ok(Behaviour {
            engine,
            local: local_peer_id,
            links: Links::default(),
            fallback: Fallback::new(&config),
            dials: Dials::default(),
            warm: WarmDials::default(),
            outbox: Outbox::new(MAX_COMMANDS),
            push_pulls_in_flight: HashMap::new(),
            next_exchange: 0,
            answers: Tasks::new(MAX_PUSH_PULLS_IN_FLIGHT),
            requests: Tasks::new(inbound),
            serving: Tasks::new(inbound),
            inbound: Inbound::default(),
            tagged: HashSet::new(),
            no_probe_grace: HashSet::new(),
            seeds: Seeds::default(),
            next_rejoin,
            addrs: LocalAddrs::default(),
            announced: meta,
            sleep: Timer::default(),
            io: IoStats::default(),
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The sans-IO engine, for queries not mirrored here ([`SwimEngine::core_stats`],
    /// [`SwimEngine::suspicion`], ...).
    pub fn engine(&self) -> &SwimEngine {
        &self.engine
    }

    /// Joins `realm` through `seeds`, each a peer and an address of it (repeat a peer to give
    /// several addresses; a trailing `/p2p/` must name the same peer). The addresses go to the
    /// swarm's address book ([`ToSwarm::NewExternalAddrOfPeer`]); the join itself is a
    /// push-pull with each seed. A seed that cannot be reached is reported as
    /// [`SwimEvent::JoinFailed`]; with [`Config::rejoin_interval`] the node keeps retrying
    /// while it knows no live member. Joining again adds seeds.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRealm`], [`Error::Left`], [`Error::SeedAddress`].
    pub fn join(&mut self, realm: &Realm, seeds: &[(PeerId, Multiaddr)]) -> Result<(), Error> {
        if self.engine.has_left() {
            return Err(Error::Left);
        }
        if self.engine.local_member(realm).is_none() {
            return Err(UnknownRealm(realm.clone()).into());
        }
        let given = Seeds::group(self.local, seeds)?;
        for (peer, addrs) in &given {
            for addr in addrs {
                self.command(ToSwarm::NewExternalAddrOfPeer {
                    peer: *peer,
                    addr: addr.clone(),
                });
            }
        }
        self.seeds.add(realm, &given);
        let ids: Vec<PeerId> = given.iter().map(|(p, _)| *p).collect();
        tracing::info!(%realm, seeds = ids.len(), "swim: joining");
        self.engine.join(now().into_std(), realm, &ids)?;
        if let Some(interval) = self.config.rejoin_interval {
            if self.next_rejoin.is_none() {
                self.next_rejoin = Some(now() + interval);
            }
        }
        self.drain();
        Ok(())
    }

    /// Leaves every realm gracefully: the engine raises its incarnation and tells
    /// [`leave_fanout`](crate::SwimConfig::leave_fanout) members per realm, who spread it;
    /// they report [`SwimEvent::MemberLeft`]. Afterwards the behaviour ignores SWIM traffic
    /// and keeps no connection alive. Keep polling the swarm for a moment (a few milliseconds
    /// on a LAN) so the datagrams go out before the swarm is dropped.
    pub fn leave(&mut self) {
        if self.engine.has_left() {
            return;
        }
        tracing::info!("swim: leaving");
        self.engine.leave(now().into_std());
        self.next_rejoin = None;
        self.drain();
    }

    /// Whether [`Behaviour::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.engine.has_left()
    }

    /// Every member of `realm` known now (alive, suspect, and recently dead or left), sorted
    /// by peer id, without this node.
    pub fn members(&self, realm: &Realm) -> Vec<Member> {
        self.engine.members(realm)
    }

    /// The live (alive or suspect) members of `realm`, without this node.
    pub fn live_members(&self, realm: &Realm) -> Vec<Member> {
        let mut m = self.engine.members(realm);
        m.retain(|m| m.state.is_live());
        m
    }

    /// One member of `realm`, if known.
    pub fn member(&self, realm: &Realm, peer: &PeerId) -> Option<Member> {
        self.engine.member(realm, peer)
    }

    /// This node as a member of `realm` (its incarnation and announced metadata).
    pub fn local_member(&self, realm: &Realm) -> Option<Member> {
        self.engine.local_member(realm)
    }

    /// The protocol counters of `realm`.
    pub fn stats(&self, realm: &Realm) -> Option<Stats> {
        self.engine.stats(realm)
    }

    /// The IO counters.
    pub fn io_stats(&self) -> &IoStats {
        &self.io
    }

    /// Replaces the announced application data (a new incarnation spreads it).
    ///
    /// # Errors
    ///
    /// [`Error::Meta`] if it is too large to announce, [`Error::Left`] after leaving.
    pub fn set_data(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        if self.engine.has_left() {
            return Err(Error::Left);
        }
        let data = data.into();
        let meta = NodeMeta::new(Vec::new(), data.clone())?;
        if meta.encoded_len() > self.config.swim.max_metadata_bytes {
            return Err(MetaError::TooLarge {
                len: meta.encoded_len(),
                limit: self.config.swim.max_metadata_bytes,
            }
            .into());
        }
        self.config.data = data;
        self.update_meta()?;
        Ok(())
    }

    /// Queues a command for the swarm; at the outbox's limit it is dropped (and counted).
    fn command(&mut self, command: ToSwarm<Event>) {
        if let Err(e) = self.outbox.push(command) {
            self.io.commands_dropped += 1;
            tracing::warn!(error = %e, "swim: command for the swarm dropped");
        }
    }

    /// Carries out what the engine asks for: datagrams, push-pulls, events (these only while
    /// the outbox has room; the rest wait in the engine).
    fn drain(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            match t.kind {
                TransmitKind::Datagram => {
                    tracing::trace!(peer = %t.to, kind = kind_of(&t.message.body), updates = t.message.body.updates().len(), "swim: send");
                    // A dissemination round's gossip never starts a dial: it goes to random
                    // members, and dialing for it would bunch handshakes together during
                    // formation; it waits (briefly) for a connection that comes anyway.
                    let dial = !matches!(t.message.body, Body::Gossip(_));
                    let bytes = Bytes::from(t.message.encode());
                    let queued = self.send_datagram_with(t.to, bytes, dial);
                    if let (true, Body::Ping(ping)) = (queued, &t.message.body) {
                        // A probe's ping waiting for the first connection with a new
                        // member: not a failure yet. (A member we were connected with and
                        // lost is probed as usual: it may have crashed.)
                        // Once per member: a second probe still waiting for the dial
                        // fails as usual.
                        if !self.no_probe_grace.contains(&t.to) {
                            tracing::debug!(peer = %t.to, seq = ping.seq, "swim: ping waits for a first connection");
                            self.engine
                                .handle_probe_unsent(now().into_std(), &t.to, ping.seq);
                            self.no_probe_grace.insert(t.to);
                        }
                    }
                }
                TransmitKind::PushPull => self.open_push_pull(t.to, &t.message),
            }
        }
        while self.outbox.len() < self.outbox.limit() {
            let Some(event) = self.engine.poll_event() else {
                break;
            };
            self.on_engine_event(&event);
            self.command(ToSwarm::GenerateEvent(event));
        }
    }

    /// What the behaviour does about an engine event besides reporting it.
    fn on_engine_event(&mut self, event: &SwimEvent) {
        match event {
            SwimEvent::MemberJoined { realm, member } => {
                tracing::debug!(%realm, peer = %member.peer, "swim: member joined");
                self.member_live(member.peer);
            }
            SwimEvent::MemberRefuted { member, .. } => self.member_live(member.peer),
            SwimEvent::MemberFailed { realm, peer, .. } => {
                tracing::info!(%realm, %peer, "swim: member failed");
                self.member_gone(*peer);
            }
            SwimEvent::MemberLeft { realm, peer, .. } => {
                tracing::info!(%realm, %peer, "swim: member left");
                self.member_gone(*peer);
            }
            SwimEvent::MemberSuspected {
                realm,
                peer,
                accuser,
                ..
            } => {
                tracing::debug!(
                    %realm, %peer, own = (*accuser == self.local),
                    connections = self.links.count(peer),
                    dialing = self.dials.dialing.contains_key(peer),
                    queued = self.dials.queued.get(peer).map_or(0, |q| q.len()),
                    "swim: member suspected"
                )
            }
            SwimEvent::JoinFailed { realm, seed } => {
                tracing::info!(%realm, %seed, "swim: join through seed failed")
            }
            _ => {}
        }
    }

    fn send_datagram(&mut self, to: PeerId, bytes: Bytes) {
        self.send_datagram_with(to, bytes, true);
    }

    /// Sends `bytes` to `to`: as a datagram, or on the fallback stream if none of its
    /// connections carries datagrams; without a connection, queues them and, if `dial`,
    /// dials. `true` if they were queued (they wait for a connection).
    fn send_datagram_with(&mut self, to: PeerId, bytes: Bytes, dial: bool) -> bool {
        match self.links.send(to, &bytes, &mut self.io) {
            Sent::Done => false,
            Sent::NoDatagrams { on } => {
                let max = self.config.swim.mtu;
                self.fallback.send(to, on, &bytes, max, &mut self.io);
                false
            }
            Sent::Unsent => self.queue_datagram(to, bytes, dial),
        }
    }

    /// The next command for the swarm: ours, then the fallback streams' requests.
    fn poll_commands(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        if let Poll::Ready(cmd) = self.outbox.poll(cx) {
            return Poll::Ready(cmd);
        }
        self.fallback.poll_command(cx)
    }

    /// A member became live (joined, came back, refuted): tag it, end any dial backoff, and
    /// dial it ahead of its first probe if it has no connection.
    fn member_live(&mut self, peer: PeerId) {
        self.dials.backoff.remove(&peer);
        let connected = self.links.is_connected(&peer);
        if connected {
            self.no_probe_grace.insert(peer);
        }
        if self.config.conn_manager_tag_value != 0 && self.tagged.insert(peer) {
            self.command(ToSwarm::ConnManager(ConnManagerCommand::TagPeer {
                peer,
                tag: CONN_MANAGER_TAG.to_string(),
                value: self.config.conn_manager_tag_value,
            }));
        }
        // Only the peer with the smaller id dials ahead (the connection both sides prefer),
        // so the two sides do not handshake twice.
        if self.config.warm_dials_per_period > 0 && self.local < peer && !connected {
            let jitter = self
                .config
                .swim
                .probe_interval
                .mul_f64(rand::random::<f64>());
            self.warm.push(peer, now(), jitter);
        }
    }

    /// A member failed or left: untag it unless it is still live in another realm.
    fn member_gone(&mut self, peer: PeerId) {
        if self.is_live_member(&peer) {
            return;
        }
        self.no_probe_grace.remove(&peer);
        if self.tagged.remove(&peer) {
            self.command(ToSwarm::ConnManager(ConnManagerCommand::UntagPeer {
                peer,
                tag: CONN_MANAGER_TAG.to_string(),
            }));
        }
    }

    /// Dials one queued newly learned member that still needs it, if one is due.
    fn warm_one(&mut self, t: Instant) {
        let per = self.config.warm_dials_per_period.max(1);
        let spacing = self.config.swim.probe_interval / per;
        let (links, dials, engine) = (&self.links, &self.dials, &self.engine);
        let due = self.warm.take_due(t, spacing, |peer| {
            !links.is_connected(peer)
                && !dials.dialing.contains_key(peer)
                && is_live(engine, peer)
                && !dials.backing_off(peer, t)
        });
        if let Some(peer) = due {
            self.io.warm_dials += 1;
            self.dial(peer);
        }
    }

    fn backing_off(&self, peer: &PeerId) -> bool {
        self.dials.backing_off(peer, now())
    }

    /// Whether a datagram for `peer` may start a dial: only live members, seeds and members
    /// waiting for confirmation, and not while its dials back off.
    fn may_dial(&self, peer: &PeerId) -> bool {
        (self.is_live_member(peer) || self.seeds.contains(peer) || self.is_unconfirmed(peer))
            && !self.backing_off(peer)
    }

    /// Whether `peer` waits unconfirmed in some realm (its confirmation pings may dial it
    /// at the addresses of its signed record).
    fn is_unconfirmed(&self, peer: &PeerId) -> bool {
        self.engine
            .realms()
            .any(|r| self.engine.unconfirmed_member(r, peer).is_some())
    }

    fn queue_datagram(&mut self, to: PeerId, bytes: Bytes, dial: bool) -> bool {
        if !self.dials.dialing.contains_key(&to) && !self.may_dial(&to) {
            self.io.datagrams_not_dialed += 1;
            return false;
        }
        let queued = self
            .dials
            .enqueue(to, bytes, now(), &self.config, &mut self.io);
        if dial && !self.dials.dialing.contains_key(&to) {
            self.dial(to);
        }
        queued && self.dials.dialing.contains_key(&to)
    }

    /// Dials `peer` at its confirmed addresses only (see [`Seeds::dial_addresses`]): those of
    /// its own signed alive record, or given by the application for a seed; never at
    /// addresses that other behaviours or the swarm's address book learned second-hand. A
    /// peer with none is unreachable: its probe fails and its dials back off.
    fn dial(&mut self, peer: PeerId) {
        let addrs = self.addresses_of(&peer);
        if addrs.is_empty() {
            tracing::debug!(%peer, "swim: no confirmed address to dial a member at");
            self.io.dials_without_address += 1;
            self.dials.drop_queue(&peer, &mut self.io);
            self.dials.back_off(peer, now(), &self.config);
            self.engine
                .handle_probe_unreachable(now().into_std(), &peer);
            return;
        }
        let opts = DialOpts::peer(peer)
            .addresses(addrs)
            .extend_addresses_through_behaviour(false)
            .condition(PeerCondition::DisconnectedAndNotDialing);
        tracing::debug!(%peer, "swim: dialing a member");
        self.dials.dialing.insert(peer, opts.connection_id());
        self.io.dials += 1;
        self.command(ToSwarm::Dial(opts));
    }

    /// Sends what waited for a connection to `peer`.
    fn flush_queue(&mut self, peer: PeerId) {
        if !self.dials.queued.contains_key(&peer) {
            return;
        }
        let t = now();
        let fresh = self
            .dials
            .take_fresh(&peer, t, self.config.queued_datagram_ttl, &mut self.io);
        // A probe's ping may be among them: its timers run from now, not from the dial.
        self.engine.handle_probe_sent(t.into_std(), &peer);
        for bytes in fresh {
            self.send_datagram(peer, bytes);
        }
    }

    /// Addresses to dial `peer` at (see [`Seeds::dial_addresses`]).
    fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.seeds.dial_addresses(&self.engine, peer)
    }

    fn is_live_member(&self, peer: &PeerId) -> bool {
        is_live(&self.engine, peer)
    }

    /// Recomputes the announced metadata from addresses and data; announces it if it changed.
    fn update_meta(&mut self) -> Result<(), Error> {
        let meta = self.addrs.meta(self.local, &self.config)?;
        if meta == self.announced {
            return Ok(());
        }
        tracing::debug!(addresses = ?meta.addresses(), "swim: announcing new metadata");
        self.engine.set_metadata(now().into_std(), meta.clone())?;
        self.announced = meta;
        self.drain();
        Ok(())
    }

    fn on_datagram(&mut self, id: ConnectionId, result: Result<Bytes, ConnectionError>) {
        let Some((peer, bytes)) = self.links.on_read(id, result) else {
            return;
        };
        self.io.datagrams_received += 1;
        self.on_message(peer, id, &bytes);
    }

    /// A message from `peer` on connection `id`, a datagram or a fallback stream's frame:
    /// both take this same path.
    fn on_message(&mut self, peer: PeerId, id: ConnectionId, bytes: &[u8]) {
        if self.engine.has_left() {
            return;
        }
        if bytes.len() > self.engine.limits().max_datagram_bytes {
            self.io.datagrams_bad += 1;
            return;
        }
        match Message::decode(bytes, self.engine.limits()) {
            Ok(msg) => {
                tracing::trace!(%peer, kind = kind_of(&msg.body), updates = msg.body.updates().len(), "swim: received");
                // Only SWIM traffic of our realms keeps the connection alive, not junk.
                if self.engine.local_member(&msg.realm).is_some() {
                    self.links.heard_on(id, now());
                }
                self.engine.handle_message(now().into_std(), peer, msg);
            }
            Err(e) => {
                self.io.datagrams_bad += 1;
                tracing::debug!(%peer, error = %e, "swim: bad datagram dropped");
            }
        }
        self.drain();
    }

    /// Runs due timers and arms the sleep for the next; `true` if something ran.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let next_engine = self.engine.poll_timeout().map(Instant::from_std);
        let next = [next_engine, self.next_rejoin, self.warm.next()]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            return false;
        };
        if at > now() && self.sleep.poll_at(Some(at), cx).is_pending() {
            return false;
        }
        let t = now();
        if next_engine.is_some_and(|c| c <= t) {
            self.engine.handle_timeout(t.into_std());
            self.drain();
            let ttl = self.config.queued_datagram_ttl;
            self.dials.sweep(t, ttl, &mut self.io);
        }
        self.warm_one(t);
        if self.next_rejoin.is_some_and(|r| r <= t) {
            self.next_rejoin = self.config.rejoin_interval.map(|i| t + i);
            if !self.engine.has_left() {
                let in_flight = &self.push_pulls_in_flight;
                self.seeds.rejoin(&mut self.engine, t.into_std(), |r, p| {
                    in_flight.contains_key(&(r.clone(), *p))
                });
                self.drain();
            }
        }
        true
    }

    /// A dial of `peer` failed (ours if it is `connection`).
    fn on_dial_failure(&mut self, peer: PeerId, connection: ConnectionId, error: &DialError) {
        let ours = self.dials.dial_ended(&peer, connection);
        if matches!(error, DialError::ConditionFalse(_)) {
            // The peer is connected or being dialed already. Connected: send now. Dialed (by
            // another behaviour): its connection flushes the queue, or the TTL sweep drops it.
            if ours && self.links.is_connected(&peer) {
                self.flush_queue(peer);
            }
            return;
        }
        // Any failed dial of the peer (ours or another behaviour's) ends what waited for it;
        // ours also backs off further dials.
        self.dials.drop_queue(&peer, &mut self.io);
        // A probe waiting for this connection fails as usual: the member cannot be reached
        // (the grace for a first connection never shelters an unreachable member).
        self.engine
            .handle_probe_unreachable(now().into_std(), &peer);
        if ours {
            let wait = self.dials.back_off(peer, now(), &self.config);
            tracing::debug!(%peer, %error, ?wait, "swim: dial of a member failed; backing off");
        }
        self.drain();
    }
}

/// Whether `peer` is a live (alive or suspect) member of some realm of `engine`.
fn is_live(engine: &SwimEngine, peer: &PeerId) -> bool {
    engine
        .realms()
        .any(|r| engine.member(r, peer).is_some_and(|m| m.state.is_live()))
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![PROTOCOL, STREAM_PROTOCOL]
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = peer else {
            return Ok(Vec::new());
        };
        let mut extra = self.addresses_of(&peer);
        extra.retain(|a| !addresses.contains(a));
        Ok(extra)
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        if self.engine.has_left() {
            return false;
        }
        self.links.keep_alive(
            &peer,
            connection,
            self.is_live_member(&peer),
            self.config.traffic_keep_alive,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let Some(change) = self.links.on_swarm_event(&event, self.local) {
            if let ConnectionChange::Opened { peer, .. } = change {
                self.dials.connected(&peer);
                if self.is_live_member(&peer) {
                    self.no_probe_grace.insert(peer);
                }
                self.flush_queue(peer);
            }
            return;
        }
        if self.addrs.on_swarm_event(&event) {
            let _ = self.update_meta();
            return;
        }
        if let FromSwarm::DialFailure {
            peer: Some(peer),
            connection,
            error,
        } = event
        {
            self.on_dial_failure(peer, connection, error);
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        if inbound.protocol == STREAM_PROTOCOL {
            let max = self.engine.limits().max_datagram_bytes;
            let left = self.engine.has_left();
            self.fallback.accept(inbound, max, left, &mut self.io);
        } else {
            self.accept_push_pull(inbound);
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        if let Some(result) = self.fallback.on_outbound_stream(result, &mut self.io) {
            self.on_push_pull_stream(result);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        for _ in 0..POLL_BUDGET {
            if let Poll::Ready(cmd) = self.poll_commands(cx) {
                return Poll::Ready(cmd);
            }
            // Engine events that waited for room in the outbox.
            self.drain();
            let mut busy = self.poll_tasks(cx);
            if let Poll::Ready((peer, unsent)) = self.fallback.poll_writers(cx, &mut self.io) {
                // Queued while its idle stream closed: on a new one.
                for bytes in unsent {
                    self.send_datagram_with(peer, Bytes::from(bytes), false);
                }
                busy = true;
            }
            // A bounded batch of datagrams and fallback-stream messages (so `last_heard` is
            // fresh), then the timers, every time: a steady stream of messages must not hold
            // back probes and suspicions.
            for _ in 0..DATAGRAM_BATCH {
                match self.links.poll_read(cx) {
                    Poll::Ready(Some((id, result))) => {
                        self.on_datagram(id, result);
                        busy = true;
                    }
                    _ => break,
                }
            }
            for _ in 0..DATAGRAM_BATCH {
                match self.fallback.poll_read(cx, &mut self.io) {
                    Poll::Ready((peer, id, bytes)) => {
                        self.on_message(peer, id, &bytes);
                        busy = true;
                    }
                    Poll::Pending => break,
                }
            }
            if self.poll_timers(cx) {
                busy = true;
            }
            if !busy {
                // Nothing ran: answer what this round queued, else wait (the outboxes, the
                // task sets, the readers and the timer hold the waker).
                return self.poll_commands(cx);
            }
        }
        if let Poll::Ready(cmd) = self.poll_commands(cx) {
            return Poll::Ready(cmd);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
