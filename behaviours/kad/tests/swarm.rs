//! The kademlia behaviour over real QUIC on loopback: swarms composed of identify and kad with
//! `#[derive(NetworkBehaviour)]`, each driven by its own task.
//!
//! * `ten_nodes_find_store_provide_and_tag`: ten nodes bootstrap through one; every node finds
//!   every other with FIND_NODE; a record PUT by one node is GET by another; provider records
//!   and the discovery helper; routing-table peers carry the `kad` tag in the connection
//!   manager, which is dropped when a peer leaves the table.
//! * `hostile_requests_get_errors_not_panics`: a raw stream client sends oversized, malformed
//!   and unknown requests, pipelines requests on one stream and opens too many streams.
//! * `client_mode_and_switching_modes`: a client uses the DHT without entering routing
//!   tables; switching to server mode (pushed by identify) makes peers add it.

use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use meshwire_core::{Keypair, PeerId};
use meshwire_kad::discovery::Lookup;
use meshwire_kad::protocol::{KadCodec, KadRequest, KadResponse, ProtocolError, Record};
use meshwire_kad::{self as kad, InboundRequest, Mode, QueryId, QueryResult};
use meshwire_swarm::connmgr::DynConnManager;
use meshwire_swarm::{
    NetworkBehaviour, OpenStream, OutboundStreamResult, Stream, StreamProtocol, Swarm, SwarmConfig,
    SwarmEvent, ToSwarm,
};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Multiaddr;
use tokio::sync::{mpsc, oneshot};

const T: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
struct App {
    identify: meshwire_identify::Behaviour,
    kad: kad::Behaviour,
}

type Cmd = Box<dyn FnOnce(&mut Swarm<App>) + Send>;

/// One identify + kad swarm running in its own task.
struct Node {
    peer: PeerId,
    addr: Multiaddr,
    cm: DynConnManager,
    cmds: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<kad::Event>,
    /// Finished queries read while waiting for another.
    finished: HashMap<QueryId, QueryResult>,
    task: tokio::task::JoinHandle<()>,
}

fn swarm_config() -> SwarmConfig {
    SwarmConfig {
        idle_connection_timeout: Some(Duration::from_secs(120)),
        ..SwarmConfig::default()
    }
}

impl Node {
    async fn start(config: kad::Config) -> Node {
        let key = Keypair::generate();
        let peer = key.peer_id();
        let behaviour = App {
            identify: meshwire_identify::Behaviour::new(
                meshwire_identify::Config::from_public_key(key.public())
                    .with_push_listen_addr_updates(true),
            ),
            kad: kad::Behaviour::new(peer, config),
        };
        let transport = QuicTransport::new(key, QuicConfig::default()).expect("transport");
        let mut swarm = Swarm::new(transport, behaviour, swarm_config());
        let cm = swarm.conn_manager().clone();
        swarm
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .expect("listen");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
                break address;
            }
        };
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    cmd = cmd_rx.recv() => match cmd {
                        Some(f) => f(&mut swarm),
                        None => break,
                    },
                    ev = swarm.next_event() => match ev {
                        SwarmEvent::Behaviour(AppEvent::Kad(e)) => {
                            let _ = ev_tx.send(e);
                        }
                        SwarmEvent::Behaviour(AppEvent::Identify(e)) => {
                            tracing::trace!(?e, "identify");
                        }
                        _ => {}
                    }
                }
            }
        });
        Node {
            peer,
            addr,
            cm,
            cmds: cmd_tx,
            events: ev_rx,
            finished: HashMap::new(),
            task,
        }
    }

    /// Runs `f` on the swarm in its task.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<App>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .expect("node alive");
        rx.await.expect("node replied")
    }

    async fn kad<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut kad::Behaviour) -> R + Send + 'static,
    ) -> R {
        self.call(move |s| f(&mut s.behaviour_mut().kad)).await
    }

    /// Waits (bounded) for an event `f` picks; finished queries skipped are kept.
    async fn wait<R>(&mut self, what: &str, mut f: impl FnMut(&kad::Event) -> Option<R>) -> R {
        let events = &mut self.events;
        let finished = &mut self.finished;
        tokio::time::timeout(T, async {
            loop {
                let ev = events.recv().await.expect("node alive");
                if let Some(r) = f(&ev) {
                    return r;
                }
                if let kad::Event::QueryFinished { id, result, .. } = ev {
                    finished.insert(id, result);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// The result of query `id`.
    async fn result(&mut self, id: QueryId) -> QueryResult {
        if let Some(r) = self.finished.remove(&id) {
            return r;
        }
        self.wait(&format!("query {id}"), |e| match e {
            kad::Event::QueryFinished { id: q, result, .. } if *q == id => Some(result.clone()),
            _ => None,
        })
        .await
    }

    async fn routing_table(&self) -> Vec<PeerId> {
        self.kad(|k| k.routing_table().iter().map(|n| n.peer).collect())
            .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_nodes(n: usize, config: impl Fn(usize) -> kad::Config) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        nodes.push(Node::start(config(i)).await);
    }
    nodes
}

/// Every node but the first adds the first as its bootstrap peer and bootstraps; waits for
/// every bootstrap, and until the first node has the servers among them in its routing table.
async fn bootstrap_through_first(nodes: &mut [Node], servers: &[PeerId]) {
    let (boot, addr) = (nodes[0].peer, nodes[0].addr.clone());
    let mut ids = Vec::new();
    for node in nodes[1..].iter() {
        let a = addr.clone();
        let id = node
            .kad(move |k| {
                k.add_address(boot, a);
                k.bootstrap().expect("a known peer")
            })
            .await;
        ids.push(id);
    }
    for (node, id) in nodes[1..].iter_mut().zip(ids) {
        let r = node.result(id).await;
        assert!(matches!(r, QueryResult::Bootstrap(Ok(_))), "{r:?}");
    }
    // Identify tells the first node about each server shortly after it connected.
    tokio::time::timeout(T, async {
        loop {
            let table = nodes[0].routing_table().await;
            if servers
                .iter()
                .all(|p| *p == nodes[0].peer || table.contains(p))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the bootstrap node learns every server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_find_store_provide_and_tag() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut nodes = start_nodes(10, |_| kad::Config::default()).await;
    let peers: Vec<PeerId> = nodes.iter().map(|n| n.peer).collect();
    bootstrap_through_first(&mut nodes, &peers).await;

    // Every node finds every other: the closest peer to a node's id is the node.
    let mut lookups = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for (j, target) in peers.iter().enumerate() {
            if i != j {
                let t = *target;
                lookups.push((i, j, node.kad(move |k| k.find_peer(t)).await));
            }
        }
    }
    let mut max_requests = 0;
    for (i, j, id) in lookups {
        let QueryResult::FindNode(Ok(ok)) = nodes[i].result(id).await else {
            panic!("lookup of node {j} by node {i} failed")
        };
        assert!(ok.converged);
        assert_eq!(
            ok.peers.first().map(|p| p.id),
            Some(peers[j]),
            "node {i} finds node {j}"
        );
        assert!(
            !ok.peers.iter().any(|p| p.id == peers[i]),
            "a lookup never returns the local node"
        );
        max_requests = max_requests.max(ok.peers.len());
    }
    assert!(max_requests >= 8, "lookups return the network's peers");

    // Each routing table holds the others (10 nodes, k = 20).
    for (i, node) in nodes.iter().enumerate() {
        let table = node.routing_table().await;
        assert_eq!(table.len(), 9, "node {i}'s table: {table:?}");
    }

    // A record PUT by node 3 is GET by node 7 from a remote peer.
    let record = Record::new("the-key", b"the value".to_vec());
    let id = nodes[3]
        .kad(move |k| k.put_value(record, 5).expect("stored locally"))
        .await;
    let QueryResult::PutValue(Ok(put)) = nodes[3].result(id).await else {
        panic!("put failed")
    };
    assert_eq!(put.successes, 9, "stored at every other node");
    let id = nodes[7].kad(|k| k.get_value("the-key".into(), 2)).await;
    let QueryResult::GetValue(Ok(got)) = nodes[7].result(id).await else {
        panic!("get failed")
    };
    assert!(got.records.len() >= 2);
    for r in &got.records {
        assert_eq!(r.record.value, b"the value");
        assert_eq!(r.record.publisher, Some(peers[3]));
    }
    assert!(got
        .records
        .iter()
        .any(|r| r.peer.is_some_and(|p| p != peers[7])));

    // Providers: node 2 provides a key, node 8 finds it with its address.
    let key = kad::discovery::service_key("files");
    let k2 = key.clone();
    let id = nodes[2]
        .kad(move |k| k.start_providing(k2).expect("provider store"))
        .await;
    let QueryResult::StartProviding(Ok(ok)) = nodes[2].result(id).await else {
        panic!("start_providing failed")
    };
    assert_eq!(ok.peers, 9);
    let k8 = key.clone();
    let id = nodes[8].kad(move |k| k.get_providers(k8)).await;
    let QueryResult::GetProviders(Ok(ok)) = nodes[8].result(id).await else {
        panic!("get_providers failed")
    };
    let provider = ok
        .providers
        .iter()
        .find(|p| p.id == peers[2])
        .expect("node 2 is a provider");
    assert!(
        provider.addrs.contains(&nodes[2].addr),
        "the provider's listen address is announced: {:?}",
        provider.addrs
    );

    // The discovery helper: announce a service, look it up, then hit the cache.
    let id = nodes[4]
        .kad(|k| k.announce("relay").expect("provider store"))
        .await;
    assert!(matches!(
        nodes[4].result(id).await,
        QueryResult::StartProviding(Ok(_))
    ));
    let Lookup::Started(id) = nodes[6].kad(|k| k.discover("relay")).await else {
        panic!("nothing cached yet")
    };
    let providers = nodes[6]
        .wait("the service lookup", |e| match e {
            kad::Event::ServiceFound {
                id: q,
                service,
                providers,
            } if *q == id => {
                assert_eq!(service, "relay");
                Some(providers.clone())
            }
            _ => None,
        })
        .await;
    assert!(providers.iter().any(|p| p.id == peers[4]));
    let Lookup::Cached(cached) = nodes[6].kad(|k| k.discover("relay")).await else {
        panic!("the second lookup is served from the cache")
    };
    assert_eq!(cached, providers);

    // Routing-table peers are tagged "kad" = 5 in the connection manager.
    for (i, node) in nodes.iter().enumerate() {
        let table = node.routing_table().await;
        let mut tagged = 0;
        for p in &table {
            let connected = node.call({
                let p = *p;
                move |s| s.is_connected(&p)
            });
            if !connected.await {
                continue;
            }
            let info = node
                .cm
                .get_tag_info(*p)
                .expect("connected peers are tracked");
            assert_eq!(info.tags.get("kad"), Some(&5), "node {i}, peer {p}");
            tagged += 1;
        }
        assert!(tagged > 0, "node {i} is connected to routing-table peers");
    }
    // A peer leaving the table loses the tag.
    let (victim, node) = (peers[1], &mut nodes[0]);
    assert!(node.kad(move |k| k.remove_peer(&victim)).await);
    node.wait("the removal", |e| match e {
        kad::Event::PeerRemoved { peer, .. } if *peer == victim => Some(()),
        _ => None,
    })
    .await;
    // The untag command follows the event out of the behaviour; a round trip through the
    // node's task orders it after.
    node.call(|_| ()).await;
    let info = node.cm.get_tag_info(victim).expect("still connected");
    assert_eq!(info.tags.get("kad"), None);
}

// ---- hostile requests ------------------------------------------------------------------------

/// Opens streams for the test and hands them over.
struct Raw {
    commands: mpsc::UnboundedReceiver<ToSwarm<()>>,
    outbound: mpsc::UnboundedSender<OutboundStreamResult>,
}

impl NetworkBehaviour for Raw {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        let _ = self.outbound.send(result);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        match self.commands.poll_recv(cx) {
            Poll::Ready(Some(cmd)) => Poll::Ready(cmd),
            _ => Poll::Pending,
        }
    }
}

struct RawClient {
    commands: mpsc::UnboundedSender<ToSwarm<()>>,
    outbound: mpsc::UnboundedReceiver<OutboundStreamResult>,
    target: PeerId,
    _task: tokio::task::JoinHandle<()>,
}

impl RawClient {
    async fn start(target: PeerId, addr: Multiaddr) -> RawClient {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let transport =
            QuicTransport::new(Keypair::generate(), QuicConfig::default()).expect("transport");
        let mut swarm = Swarm::new(
            transport,
            Raw {
                commands: cmd_rx,
                outbound: out_tx,
            },
            swarm_config(),
        );
        swarm.add_peer_address(target, addr);
        let task = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        RawClient {
            commands: cmd_tx,
            outbound: out_rx,
            target,
            _task: task,
        }
    }

    async fn open(&mut self) -> Stream {
        self.commands
            // Eager: the test holds some streams unused (busy waiting for a first request) and
            // the node must count them, so each reaches the node when opened.
            .send(ToSwarm::OpenStream(
                OpenStream::new(self.target, kad::PROTOCOL).eager(),
            ))
            .unwrap();
        let result = tokio::time::timeout(T, self.outbound.recv())
            .await
            .expect("stream result in time")
            .expect("client alive");
        result.result.expect("stream opened").stream
    }
}

/// Reads until the end of the stream or an error; `Ok(bytes)` on a clean end.
async fn read_to_end(stream: &mut Stream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut buf))
        .await
        .expect("the server ends the stream")?;
    Ok(buf)
}

async fn request(stream: &mut Stream, req: &KadRequest) -> KadResponse {
    let codec = KadCodec::default();
    stream
        .write_all(&codec.encode_request(req).unwrap())
        .await
        .unwrap();
    stream.flush().await.unwrap();
    read_response(stream).await
}

async fn read_response(stream: &mut Stream) -> KadResponse {
    let codec = KadCodec::default();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        tokio::time::timeout(T, stream.read_exact(&mut byte))
            .await
            .expect("response in time")
            .expect("response bytes");
        buf.push(byte[0]);
        if let Some((resp, used)) = codec.decode_response(&buf).expect("valid response") {
            assert_eq!(used, buf.len());
            return resp;
        }
    }
}

async fn inbound_failure(node: &mut Node, client: PeerId) -> kad::Error {
    node.wait("an inbound failure", |e| match e {
        kad::Event::InboundFailure { peer, error, .. } if *peer == client => Some(error.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_errors_not_panics() {
    // An inbound timeout far beyond the test's waits: a stream the node ends within them was
    // ended by the rule under test, not by the timeout.
    let mut node = Node::start(
        kad::Config::default()
            .with_max_inbound_streams_per_peer(2)
            .with_inbound_timeout(Duration::from_secs(3600)),
    )
    .await;
    let mut raw = RawClient::start(node.peer, node.addr.clone()).await;
    let codec = KadCodec::default();

    // Oversized: a length prefix of 1 MiB is refused before anything is allocated. Prefix and
    // payload go in one write; the node may reset the stream before the bytes are all out, so
    // a write error is fine.
    let mut s = raw.open().await;
    let mut prefix = unsigned_varint::encode::u64_buffer();
    let mut frame = unsigned_varint::encode::u64(1 << 20, &mut prefix).to_vec();
    frame.extend_from_slice(&[0u8; 64]);
    let _ = s.write_all(&frame).await;
    let _ = s.flush().await;
    let client = node
        .wait("the raw client's connection", |e| match e {
            kad::Event::InboundFailure { peer, error, .. } => Some((*peer, error.clone())),
            _ => None,
        })
        .await;
    assert!(
        matches!(
            client.1,
            kad::Error::Protocol(ProtocolError::MessageTooLarge { len, max: 16384 }) if len == 1 << 20
        ),
        "{:?}",
        client.1
    );
    let client = client.0;
    assert!(
        read_to_end(&mut s)
            .await
            .map(|b| b.is_empty())
            .unwrap_or(true),
        "no response"
    );

    // Malformed protobuf within the bound.
    let mut s = raw.open().await;
    s.write_all(&[4, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    s.flush().await.unwrap();
    let e = inbound_failure(&mut node, client).await;
    assert!(
        matches!(e, kad::Error::Protocol(ProtocolError::Protobuf(_))),
        "{e:?}"
    );
    assert!(read_to_end(&mut s)
        .await
        .map(|b| b.is_empty())
        .unwrap_or(true));

    // An unknown message type.
    let mut s = raw.open().await;
    s.write_all(&[2, 0x08, 0x09]).await.unwrap();
    s.flush().await.unwrap();
    let e = inbound_failure(&mut node, client).await;
    assert!(
        matches!(
            e,
            kad::Error::Protocol(ProtocolError::UnknownMessageType(9))
        ),
        "{e:?}"
    );
    drop(s);

    // A request cut short by the end of the stream.
    let mut s = raw.open().await;
    let frame = codec
        .encode_request(&KadRequest::FindNode { key: vec![7; 32] })
        .unwrap();
    s.write_all(&frame[..10]).await.unwrap();
    // Our end goes at once; the close then waits for the protocol's confirmation, which the
    // node's reset may overtake (the node resets the stream when it sees the cut request).
    let _ = s.close().await;
    let e = inbound_failure(&mut node, client).await;
    assert!(matches!(e, kad::Error::UnexpectedEof), "{e:?}");
    drop(s);

    // Several requests on one stream, answered in order, until the client finishes it.
    let mut s1 = raw.open().await;
    assert!(matches!(
        request(&mut s1, &KadRequest::FindNode { key: vec![1; 32] }).await,
        KadResponse::FindNode { .. }
    ));
    assert_eq!(request(&mut s1, &KadRequest::Ping).await, KadResponse::Pong);
    let pings = node
        .wait("the served requests", |e| match e {
            kad::Event::InboundRequest {
                from,
                request: InboundRequest::Ping,
            } if *from == client => Some(()),
            _ => None,
        })
        .await;
    let () = pings;

    // The stream limit is 2: s1 waits idle for its next request, s2 is busy waiting for its
    // first one. A third stream takes s1's place (rust-libp2p's rule)...
    let s2 = raw.open().await;
    let mut s3 = raw.open().await;
    assert_eq!(request(&mut s3, &KadRequest::Ping).await, KadResponse::Pong);
    assert!(
        read_to_end(&mut s1)
            .await
            .map(|b| b.is_empty())
            .unwrap_or(true),
        "the idle stream was closed to make room"
    );
    // ... s3 now waits idle too, so a fourth takes its place; with s2 and s4 both busy, a
    // fifth is refused.
    let mut s4 = raw.open().await;
    let frame = codec.encode_request(&KadRequest::Ping).unwrap();
    s4.write_all(&frame[..1]).await.unwrap();
    s4.flush().await.unwrap();
    assert!(read_to_end(&mut s3)
        .await
        .map(|b| b.is_empty())
        .unwrap_or(true));
    let mut s5 = raw.open().await;
    // The node may refuse (stop) s5 before the write lands: the write's result is not the
    // point, the refusal below is.
    let _ = s5.write_all(&frame).await;
    let _ = s5.flush().await;
    let e = inbound_failure(&mut node, client).await;
    assert!(
        matches!(e, kad::Error::TooManyStreams { limit: 2 }),
        "{e:?}"
    );
    assert!(read_to_end(&mut s5)
        .await
        .map(|b| b.is_empty())
        .unwrap_or(true));
    // s4 completes its request and is answered.
    s4.write_all(&frame[1..]).await.unwrap();
    s4.flush().await.unwrap();
    assert_eq!(read_response(&mut s4).await, KadResponse::Pong);
    drop(s2);

    // The node is unharmed: it still answers, and the client never entered its table (it
    // does not run identify, so nobody said it serves the DHT).
    let mut s6 = raw.open().await;
    assert_eq!(request(&mut s6, &KadRequest::Ping).await, KadResponse::Pong);
    assert!(node.routing_table().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_and_switching_modes() {
    let mut nodes = start_nodes(4, |i| {
        let mode = if i == 3 { Mode::Client } else { Mode::Server };
        kad::Config::default().with_mode(mode)
    })
    .await;
    let servers: Vec<PeerId> = nodes[..3].iter().map(|n| n.peer).collect();
    bootstrap_through_first(&mut nodes, &servers).await;
    let client = nodes[3].peer;
    // The client uses the DHT: it finds the servers by lookup and keeps them in its table...
    for target in servers.clone() {
        let id = nodes[3].kad(move |k| k.find_peer(target)).await;
        let QueryResult::FindNode(Ok(ok)) = nodes[3].result(id).await else {
            panic!("lookup failed")
        };
        assert_eq!(ok.peers[0].id, target);
    }
    assert_eq!(nodes[3].routing_table().await.len(), 3);
    // ... but claims no protocol, and no server added it.
    assert!(
        !nodes[3]
            .call(|s| s.protocols().contains(&kad::PROTOCOL))
            .await
    );
    for n in &nodes[..3] {
        assert!(!n.routing_table().await.contains(&client));
    }

    // Server mode: the protocol is claimed, identify pushes it, node 0 adds the node.
    nodes[3].kad(|k| k.set_mode(Mode::Server)).await;
    nodes[3]
        .wait("the mode change", |e| match e {
            kad::Event::ModeChanged { mode: Mode::Server } => Some(()),
            _ => None,
        })
        .await;
    nodes[0]
        .wait("node 0 adding the new server", |e| match e {
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            } if *peer == client => Some(()),
            _ => None,
        })
        .await;
    assert!(
        nodes[3]
            .call(|s| s.protocols().contains(&kad::PROTOCOL))
            .await
    );
    // Back to client mode: node 0 removes it.
    nodes[3].kad(|k| k.set_mode(Mode::Client)).await;
    nodes[0]
        .wait("node 0 removing the client", |e| match e {
            kad::Event::PeerRemoved { peer, .. } if *peer == client => Some(()),
            _ => None,
        })
        .await;
}
