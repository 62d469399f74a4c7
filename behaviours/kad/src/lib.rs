//! meshwire-kad: the Kademlia DHT, speaking libp2p's `/ipfs/kad/1.0.0`, as a sans-IO engine
//! and a swarm behaviour.
//!
//! [`KadEngine`] is a pure state machine in the style of `quinn-proto`: requests, responses
//! and the current time go in; requests to send and events come out. It owns no socket, reads
//! no clock and spawns nothing, so the same engine runs under the meshwire swarm, in unit
//! tests, and in a 1,000-node simulation on a virtual clock. `Behaviour` (feature `swarm`, on
//! by default) drives it over a meshwire `Swarm`: streams, timers, routing-table feeding from
//! identify and connection-manager tags (see the `behaviour` module).
//!
//! Applications reach this crate through the `meshwire` facade (feature `kad`) as
//! `meshwire::kad`: `meshwire::kad::Behaviour`, `meshwire::kad::Config` (every setting, the
//! engine's included), `meshwire::kad::Event` (the engine's events and the behaviour's, in
//! one enum), `meshwire::kad::QueryResult`, ... The examples below name it `meshwire_kad`
//! because this crate's doc tests cannot depend on the facade; with the facade,
//! `use meshwire::kad;` replaces `use meshwire_kad as kad;`.
//!
//! # Over the network
//!
//! Three nodes with identify and kademlia on loopback QUIC: `b` and `c` bootstrap through `a`,
//! then `c` finds `b` and stores a record that `a` reads.
//!
//! ```
//! use meshwire_core::Keypair;
//! use meshwire_kad::{self as kad, protocol::Record, QueryResult};
//! use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
//! use meshwire_transport::quic::{QuicConfig, QuicTransport};
//! use meshwire_transport::Multiaddr;
//!
//! #[derive(NetworkBehaviour)]
//! struct Node {
//!     identify: meshwire_identify::Behaviour,
//!     kad: kad::Behaviour,
//! }
//!
//! type Error = Box<dyn std::error::Error>;
//!
//! async fn start() -> Result<(Swarm<Node>, Multiaddr), Error> {
//!     let key = Keypair::generate();
//!     let behaviour = Node {
//!         identify: meshwire_identify::Behaviour::new(
//!             meshwire_identify::Config::from_public_key(key.public()),
//!         ),
//!         kad: kad::Behaviour::new(key.peer_id(), kad::Config::default()),
//!     };
//!     let transport = QuicTransport::new(key, QuicConfig::default())?;
//!     let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
//!     swarm.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
//!     loop {
//!         if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
//!             return Ok((swarm, address));
//!         }
//!     }
//! }
//!
//! /// Drives `swarm` until a query of its kademlia behaviour finishes.
//! async fn finished(swarm: &mut Swarm<Node>) -> QueryResult {
//!     loop {
//!         if let SwarmEvent::Behaviour(NodeEvent::Kad(kad::Event::QueryFinished { result, .. })) =
//!             swarm.next_event().await
//!         {
//!             return result;
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let (mut a, a_addr) = start().await?;
//! let (mut b, _) = start().await?;
//! let (mut c, _) = start().await?;
//! let (a_id, b_id) = (a.local_peer_id(), b.local_peer_id());
//!
//! // b knows a and bootstraps through it; a adds b to its routing table once identify tells
//! // it that b serves the DHT.
//! b.behaviour_mut().kad.add_address(a_id, a_addr.clone());
//! b.behaviour_mut().kad.bootstrap()?;
//! let (mut bootstrapped, mut a_knows_b) = (false, false);
//! while !(bootstrapped && a_knows_b) {
//!     tokio::select! {
//!         ev = b.next_event() => if let SwarmEvent::Behaviour(NodeEvent::Kad(
//!             kad::Event::QueryFinished { result: QueryResult::Bootstrap(r), .. })) = ev {
//!             r?;
//!             bootstrapped = true;
//!         },
//!         ev = a.next_event() => if let SwarmEvent::Behaviour(NodeEvent::Kad(
//!             kad::Event::RoutingUpdated { peer, .. })) = ev {
//!             a_knows_b |= peer == b_id;
//!         },
//!     }
//! }
//! // From now on a and b run in the background.
//! let a = tokio::spawn(async move { loop { a.next_event().await; } });
//! let b = tokio::spawn(async move { loop { b.next_event().await; } });
//!
//! // c bootstraps through a too, and learns b from it.
//! c.behaviour_mut().kad.add_address(a_id, a_addr);
//! c.behaviour_mut().kad.bootstrap()?;
//! assert!(matches!(finished(&mut c).await, QueryResult::Bootstrap(Ok(_))));
//! c.behaviour_mut().kad.find_peer(b_id);
//! let QueryResult::FindNode(Ok(found)) = finished(&mut c).await else { panic!() };
//! assert_eq!(found.peers[0].id, b_id, "the closest peer to b's id is b");
//!
//! // A record stored by c is held by a and b (the k = 20 closest peers).
//! c.behaviour_mut().kad.put_record(Record::new("greeting", b"hello".to_vec()), 2)?;
//! let QueryResult::PutValue(Ok(put)) = finished(&mut c).await else { panic!() };
//! assert_eq!(put.successes, 2);
//! # a.abort();
//! # b.abort();
//! # Ok(())
//! # }
//! ```
//!
//! # Sans-IO
//!
//! The engine alone, configured with [`KadConfig`] and reporting [`KadEvent`]s (what the
//! behaviour's `Config` and `Event` wrap for swarm users). Three engines wired together by
//! hand, delivering every message instantly:
//!
//! ```
//! use meshwire_core::{Keypair, PeerId};
//! use meshwire_kad::protocol::Record;
//! use meshwire_kad::{KadConfig, KadEngine, KadEvent, QueryResult};
//! use std::time::Instant;
//!
//! /// Runs the toy network until every engine is idle; returns the finished queries.
//! fn run(engines: &mut [KadEngine], ids: &[PeerId], now: Instant) -> Vec<(usize, QueryResult)> {
//!     let mut finished = Vec::new();
//!     loop {
//!         let mut busy = false;
//!         for i in 0..engines.len() {
//!             if engines[i].poll_timeout().is_some_and(|t| t <= now) {
//!                 engines[i].handle_timeout(now);
//!             }
//!             while let Some(t) = engines[i].poll_transmit() {
//!                 busy = true;
//!                 let j = ids.iter().position(|p| *p == t.peer).unwrap();
//!                 // Identify tells the swarm that the requester serves the DHT too.
//!                 let addr = format!("/memory/{i}").parse().unwrap();
//!                 engines[j].add_address(ids[i], addr, now);
//!                 let expects_response = t.request.expects_response();
//!                 match engines[j].handle_request(ids[i], t.request, now) {
//!                     // Node i reached node j at its address.
//!                     Some(response) => {
//!                         let addr = format!("/memory/{j}").parse().ok();
//!                         engines[i].handle_response(t.request_id, t.peer, addr, response, now)
//!                     }
//!                     None if expects_response => engines[i].handle_request_failed(t.request_id, now),
//!                     None => {}
//!                 }
//!             }
//!             while let Some(event) = engines[i].poll_event() {
//!                 busy = true;
//!                 if let KadEvent::QueryFinished { result, .. } = event {
//!                     finished.push((i, result));
//!                 }
//!             }
//!         }
//!         if !busy {
//!             return finished;
//!         }
//!     }
//! }
//!
//! let ids: Vec<PeerId> = (0..3).map(|n| Keypair::from_seed_for_tests(n).peer_id()).collect();
//! let mut engines: Vec<KadEngine> =
//!     ids.iter().zip(0..).map(|(id, seed)| KadEngine::with_seed(*id, KadConfig::default(), seed)).collect();
//! let now = Instant::now();
//!
//! // Nodes 1 and 2 know node 0 (say, from identify), and bootstrap through it.
//! for i in 1..3 {
//!     engines[i].add_address(ids[0], "/memory/0".parse().unwrap(), now);
//!     engines[i].bootstrap(now).unwrap();
//! }
//! run(&mut engines, &ids, now);
//! assert_eq!(engines[1].routing_table().len(), 2, "node 1 learned node 2 through node 0");
//!
//! // Node 1 stores a record at the closest peers; node 2 finds it.
//! engines[1].put_value(Record::new("greeting", b"hello".to_vec()), 1, now).unwrap();
//! run(&mut engines, &ids, now);
//! engines[2].get_value("greeting".into(), 1, now);
//! let done = run(&mut engines, &ids, now);
//! let QueryResult::GetValue(Ok(found)) = &done[0].1 else { panic!("{done:?}") };
//! assert_eq!(found.records[0].record.value, b"hello");
//! ```
//!
//! # Modules
//!
//! * [`protocol`]: the protobuf wire format, length-prefixed framing with a size bound, and
//!   the typed [`KadRequest`] / [`KadResponse`].
//! * [`kbucket`]: 256-bit keys, XOR distance, the routing table with LRU buckets and
//!   ping-before-evict.
//! * [`query`]: the iterative closest-peers lookup (α parallel requests, `k` results), query
//!   results and statistics (requests, hops, duration).
//! * [`store`]: bounded, expiring record and provider stores with republish/replication
//!   schedules.
//! * [`engine`]: [`KadEngine`], the state machine tying them together (always built, no IO
//!   or async dependency).
//! * [`discovery`]: service announcement and lookup over provider records, with a TTL cache
//!   (`Behaviour::announce`, `Behaviour::discover`).
//! * `behaviour` (feature `swarm`, on by default): `Behaviour`, the engine driven over the
//!   swarm.
//! * `sim` (feature `sim`): a deterministic discrete-event simulator of many engines.
//!
//! # Driving the engine
//!
//! Inputs: [`KadEngine::handle_request`] (inbound request → optional response),
//! [`KadEngine::handle_response`] (with the address of the connection it came over, if we
//! dialed it) / [`KadEngine::handle_request_failed`] /
//! [`KadEngine::handle_request_unsendable`] (outcome of a [`KadTransmit`]),
//! [`KadEngine::add_address`] (a peer serving the DHT, e.g. from identify),
//! [`KadEngine::handle_peer_connected`] / [`KadEngine::handle_peer_disconnected`],
//! [`KadEngine::set_mode`], and the commands ([`KadEngine::find_node`],
//! [`KadEngine::get_value`], [`KadEngine::put_value`], [`KadEngine::start_providing`],
//! [`KadEngine::get_providers`], [`KadEngine::bootstrap`]). Time:
//! [`KadEngine::handle_timeout`] whenever [`KadEngine::poll_timeout`] is due. Outputs:
//! [`KadEngine::poll_transmit`] and [`KadEngine::poll_event`] until `None` after every input.
//! `Behaviour` is that driver over the swarm.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "swarm")]
pub mod behaviour;
pub mod discovery;
pub mod engine;
pub mod kbucket;
pub mod protocol;
pub mod query;
#[cfg(feature = "sim")]
pub mod sim;
pub mod store;

#[cfg(feature = "swarm")]
pub use crate::behaviour::{Behaviour, Config, Error, Event, PROTOCOL};
pub use crate::engine::{
    InboundRequest, KadConfig, KadEngine, KadEvent, KadTransmit, Mode, RemovalReason, RequestId,
    MAX_PROVIDER_KEY_LEN,
};
pub use crate::kbucket::{Distance, Key, RoutingTable};
pub use crate::protocol::{
    KadCodec, KadPeer, KadRequest, KadResponse, ProtocolError, Record, RecordKey, PROTOCOL_NAME,
};
pub use crate::query::{QueryError, QueryId, QueryOrigin, QueryProgress, QueryResult, QueryStats};
pub use crate::store::{StoreConfig, StoreError};
