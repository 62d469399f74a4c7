//! SWIM membership and failure detection with the Lifeguard extensions: a sans-IO engine and a
//! meshwire swarm behaviour that drives it over QUIC.
//!
//! - [`SwimEngine`] (module [`engine`], always available) is the protocol as a pure state
//!   machine; the `sim` simulator (module `sim`, feature `sim`) runs thousands of them on a
//!   virtual clock.
//! - [`Behaviour`] (module [`behaviour`], feature `swarm`, on by default) is a
//!   [`NetworkBehaviour`](meshwire_swarm::NetworkBehaviour) that carries the engine's probes as
//!   unreliable QUIC datagrams and its push-pulls as `/meshwire/swim/2.0.0` streams, dials
//!   members it must reach, and keeps their connections alive. Over connections without
//!   datagrams (relayed ones) the probe traffic goes as frames on one
//!   `/meshwire/swim/2.0.0/stream` stream per peer instead. Without the feature the crate
//!   has no IO or async dependency.
//!
//! # Example: a cluster of real swarms (feature `swarm`)
//!
//! ```
//! # #[cfg(feature = "swarm")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use meshwire_core::Keypair;
//! use meshwire_swarm::{Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_swim::{Behaviour, Config, Event, Realm};
//! use meshwire_transport::quic::{QuicConfig, QuicTransport};
//!
//! let realm: Realm = "org.example.mesh".parse()?;
//! // A fast protocol period for the example; the default is 1 s.
//! let mut config = Config::default();
//! config.swim.probe_interval = Duration::from_millis(200);
//! config.swim.probe_timeout = Duration::from_millis(100);
//!
//! let mut swarms = Vec::new();
//! for _ in 0..3 {
//!     let key = Keypair::generate();
//!     let behaviour = Behaviour::new(&key, [realm.clone()], config.clone())?;
//!     let transport = QuicTransport::new(key, QuicConfig::default())?;
//!     let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
//!     swarm.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
//!     swarms.push(swarm);
//! }
//! // The first node is the seed; learn its address.
//! let seed_addr = loop {
//!     if let SwarmEvent::NewListenAddr { address, .. } = swarms[0].next_event().await {
//!         break address;
//!     }
//! };
//! let seed = (swarms[0].local_peer_id(), seed_addr);
//! for s in &mut swarms[1..] {
//!     s.behaviour_mut().join(&realm, &[seed.clone()])?;
//! }
//! // Drive all swarms until every node has learned of the two others.
//! let mut joined = 0;
//! while joined < 6 {
//!     let polls = swarms.iter_mut().map(|s| Box::pin(s.next_event()));
//!     let (event, _, _) = futures::future::select_all(polls).await;
//!     if let SwarmEvent::Behaviour(Event::MemberJoined { .. }) = event {
//!         joined += 1;
//!     }
//! }
//! assert!(swarms.iter().all(|s| s.behaviour().live_members(&realm).len() == 2));
//! # Ok(()) }
//! # #[cfg(not(feature = "swarm"))] fn main() {}
//! ```
//!
//! # The sans-IO engine
//!
//! [`SwimEngine`] is a pure state machine in the style of `quinn-proto`: the driver (meshwire's
//! swarm, a test, or the `sim` simulator) passes in time and inbound messages, and takes
//! out messages to send and membership events. It never reads a clock, sleeps or does IO,
//! and all its randomness comes from a seed, so runs are reproducible.
//!
//! ## Example: three engines wired by hand
//!
//! ```
//! use std::time::{Duration, Instant};
//! use meshwire_core::Keypair;
//! use meshwire_swim::{NodeMeta, Realm, SwimConfig, SwimEngine, SwimEvent, TransmitKind};
//!
//! let realm: Realm = "org.example.mesh".parse()?;
//! let start = Instant::now();
//! let mut nodes = (0..3u64)
//!     .map(|i| {
//!         let key = Keypair::from_seed_for_tests(i);
//!         SwimEngine::new(&key, [realm.clone()], NodeMeta::empty(), SwimConfig::default(), i, start)
//!     })
//!     .collect::<Result<Vec<SwimEngine>, _>>()?;
//!
//! // Nodes 1 and 2 join through node 0 (a push-pull with it each).
//! let seed = nodes[0].local_peer_id();
//! nodes[1].join(start, &realm, &[seed])?;
//! nodes[2].join(start, &realm, &[seed])?;
//!
//! // The driver loop: carry out every transmit (here instantly and losslessly; the swarm
//! // sends QUIC datagrams and opens streams), collect events, run timers when due.
//! let mut now = start;
//! let mut joined = 0;
//! while now < start + Duration::from_secs(10) {
//!     let mut busy = true;
//!     while busy {
//!         busy = false;
//!         for i in 0..nodes.len() {
//!             while let Some(t) = nodes[i].poll_transmit() {
//!                 busy = true;
//!                 let from = nodes[i].local_peer_id();
//!                 let j = nodes.iter().position(|n| n.local_peer_id() == t.to).unwrap();
//!                 match t.kind {
//!                     TransmitKind::Datagram => {
//!                         let bytes = t.message.encode(); // never more than SwimConfig::mtu
//!                         nodes[j].handle_datagram(now, from, &bytes)?;
//!                     }
//!                     TransmitKind::PushPull => {
//!                         if let Some(answer) = nodes[j].handle_push_pull(now, from, t.message) {
//!                             nodes[i].handle_push_pull(now, t.to, answer);
//!                         }
//!                     }
//!                 }
//!             }
//!             while let Some(event) = nodes[i].poll_event() {
//!                 if let SwimEvent::MemberJoined { .. } = event {
//!                     joined += 1;
//!                 }
//!             }
//!         }
//!     }
//!     now = nodes.iter().filter_map(SwimEngine::poll_timeout).min().unwrap();
//!     for n in &mut nodes {
//!         if n.poll_timeout().is_some_and(|t| t <= now) {
//!             n.handle_timeout(now);
//!         }
//!     }
//! }
//! assert_eq!(joined, 6); // each node learned the two others
//! assert!(nodes.iter().all(|n| n.live_member_count(&realm) == 2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The driver contract
//!
//! Inputs (`handle_*`, each takes the current time, never earlier than a previous call's):
//! - [`SwimEngine::handle_timeout`] when [`SwimEngine::poll_timeout`] is due (re-read it after
//!   every call).
//! - [`SwimEngine::handle_datagram`] for each datagram from a peer (the authenticated peer of
//!   the QUIC connection), or [`SwimEngine::handle_message`] with an already decoded
//!   [`Message`].
//! - [`SwimEngine::handle_push_pull`] / [`SwimEngine::handle_push_pull_bytes`] for a push-pull
//!   message read from a stream: for an inbound request it returns the answer to write back.
//! - [`SwimEngine::handle_push_pull_failed`] when a push-pull this engine asked for could not
//!   complete.
//! - [`SwimEngine::handle_probe_unsent`] / [`SwimEngine::handle_probe_sent`] when a probe's
//!   ping had to wait for a connection, and when it went out (optional; the swarm behaviour
//!   uses them so that connection setup does not count against a probe).
//! - Commands (plain verbs): [`SwimEngine::join`], [`SwimEngine::rejoin`],
//!   [`SwimEngine::leave`], [`SwimEngine::set_metadata`].
//!
//! Outputs (drain both after every input):
//! - [`SwimEngine::poll_transmit`]: a [`Transmit`] to a [`PeerId`](meshwire_core::PeerId), either
//!   [`TransmitKind::Datagram`] (one unreliable datagram, at most [`SwimConfig::mtu`] bytes; loss
//!   is expected) or [`TransmitKind::PushPull`] (open a stream negotiated as
//!   [`PROTOCOL_NAME`], write the framed request, read one framed answer, feed it back). The
//!   addresses of a member are in [`SwimEngine::member`]`(..).meta`.
//! - [`SwimEngine::poll_event`]: [`SwimEvent`]s (joined, updated, suspected, refuted, failed, left,
//!   join failed), each with its realm.
//! - Queries: [`SwimEngine::members`], [`SwimEngine::member`], [`SwimEngine::live_member_count`],
//!   [`SwimEngine::stats`] (per-realm [`Stats`]), [`SwimEngine::core_stats`], [`SwimEngine::local_health`].
//!
//! # Protocol
//!
//! **Failure detection (SWIM).** Each protocol period ([`SwimConfig::probe_interval`]) a node
//! probes the next member of a shuffled round-robin order (reshuffled every round; new members
//! go to random positions among those not yet probed). A ping unanswered after
//! [`SwimConfig::probe_timeout`] triggers ping-reqs through [`SwimConfig::indirect_checks`] random
//! members, which ping the target and relay its ack; the prober also repeats its ping once
//! ([`SwimConfig::ping_retry`]). No ack by the end of the period: the target becomes *suspect*,
//! and is declared *dead* if it does not refute before its suspicion timeout.
//!
//! **Lifeguard** (Dadgar et al., 2017; as in HashiCorp memberlist), each part switchable:
//! - *Local health multiplier* (LHM, `0..=`[`SwimConfig::awareness_max`]): scales the probe
//!   interval and timeout by `LHM + 1`; +1 per missed nack of a failed probe (or +1 for a
//!   failed probe without helpers), +1 for refuting a suspicion of oneself, −1 per successful
//!   probe. A node that is itself slow thus probes less eagerly instead of accusing others.
//! - *Nacks*: indirect probers that could not reach the target in time say so.
//! - *Dynamic suspicion*: the timeout starts at `max = suspicion_max_timeout_mult × min`,
//!   with `min = suspicion_mult × max(1, log10 N) × probe_interval`, and shrinks towards `min`
//!   as `ln(n + 1) / ln(k + 1)` with `n` of the `k = suspicion_mult − 2` expected independent
//!   confirmations.
//! - *Buddy system*: a ping to a member held as suspect carries that suspicion first, so
//!   the member refutes at once (its ack carries the refutation).
//!
//! **Rules** (per member; `i` = incarnation). `alive(i)` overrides `alive(j)` and
//! `suspect(j)` for `i > j`; `suspect(i)` overrides `alive(j)` for `i ≥ j` and `suspect(j)`
//! for `i > j` (same `i`: an independent confirmation); `dead(i)` and `left(i)` override alive
//! and suspect for `i ≥ j`, and only `alive(i > j)` brings a dead or left member back.
//! A node accused at or above its incarnation refutes by jumping above it and spreading
//! `alive`; accused below it (someone missed the refutation) it spreads its current `alive`
//! again. Dead and left members are forgotten after [`SwimConfig::dead_retention`].
//!
//! **Dissemination.** Updates ride on every ping, ack, ping-req and nack, as many as fit in
//! the MTU, least-transmitted first, each at most `retransmit_mult × ⌈log10(N + 1)⌉` times; a
//! newer update about a member replaces the queued older one. Dissemination rounds
//! ([`SwimConfig::gossip_interval`]) send *fresh* updates (transmitted fewer than
//! [`SwimConfig::gossip_fresh_transmits`] times) to a few random members, for a fast start.
//!
//! **Join, leave, anti-entropy.** Joining is a push-pull (full state exchange over a stream)
//! with each seed; every [`SwimConfig::push_pull_interval`] a node push-pulls with a random
//! member. A graceful leave bumps the incarnation, tells [`SwimConfig::leave_fanout`] members,
//! and stops the engine.
//!
//! **Realms.** An engine is created for a set of [`Realm`]s (reverse-DNS names) and keeps one
//! independent membership per realm; every message names its realm; messages for other realms
//! are ignored and counted ([`CoreStats::foreign_realm_messages`]).
//!
//! **Wire.** See [`wire`] and `docs/swim.md` for the byte-level specification; decoding never
//! panics and every bad input is a typed [`DecodeError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "swarm")]
pub mod behaviour;
pub mod engine;
mod hash;
mod member;
mod realm;
pub mod record;
pub mod rng;
#[cfg(feature = "sim")]
pub mod sim;
mod varint;
pub mod wire;

#[cfg(feature = "swarm")]
pub use crate::behaviour::{Behaviour, Config, Error, Event, PROTOCOL, STREAM_PROTOCOL};
pub use crate::engine::{
    ConfigError, CoreStats, SetMetaError, Stats, SwimConfig, SwimEngine, SwimEvent, Transmit,
    TransmitKind, UnknownRealm,
};
pub use crate::member::{Member, MemberState, MetaError, NodeMeta};
pub use crate::realm::{Realm, RealmError, MAX_LABEL_LEN, MAX_REALM_LEN};
pub use crate::record::{AliveVerifier, Ed25519Verifier, Signature};
pub use crate::wire::{
    DecodeError, Limits, Message, PROTOCOL_NAME, STREAM_PROTOCOL_NAME, WIRE_VERSION,
};
