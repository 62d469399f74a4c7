//! Shared by `tests/kad.rs` and `benches/kad.rs`: meshwire and rust-libp2p nodes running
//! identify + kademlia on loopback QUIC, each swarm driven by its own task and commanded
//! through closures.
//!
//! The rust-libp2p nodes are set up the way rust-libp2p applications do it: kademlia in
//! `Mode::Server` explicitly (it only switches by itself once it has a confirmed external
//! address), the listen address added as an external address (so provider records carry it),
//! and the listen addresses identify reports for peers that speak `/ipfs/kad/1.0.0` added to
//! kademlia with `add_address` (rust-libp2p's kademlia only adds the dialed address of
//! connections it dialed itself). meshwire's behaviour does the last part by itself.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::swarm::SwarmEvent as LpSwarmEvent;
use libp2p::{identify as lp_identify, kad as lp_kad, SwarmBuilder};
use meshwire_core::{Keypair, PeerId};
use meshwire_kad as mw_kad;
use meshwire_swarm::{NetworkBehaviour, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Multiaddr;
use tokio::sync::{mpsc, oneshot};

/// Connections stay open this long without streams, on both stacks.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Bound of every wait.
pub const WAIT: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
pub struct Mw {
    pub identify: meshwire_identify::Behaviour,
    pub kad: mw_kad::Behaviour,
}

#[derive(libp2p::swarm::NetworkBehaviour)]
pub struct Lp {
    pub identify: lp_identify::Behaviour,
    pub kad: lp_kad::Behaviour<lp_kad::store::MemoryStore>,
}

pub type MwSwarm = Swarm<Mw>;
pub type LpSwarm = libp2p::Swarm<Lp>;

type Cmd<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A swarm running in its own task: commands go in as closures, kademlia events come out
/// stamped with the time the task received them.
pub struct Node<S, E> {
    /// The node's peer id.
    pub peer: PeerId,
    /// Its listen address.
    pub addr: Multiaddr,
    cmds: mpsc::UnboundedSender<Cmd<S>>,
    events: mpsc::UnboundedReceiver<(Instant, E)>,
    task: tokio::task::JoinHandle<()>,
}

pub type MwNode = Node<MwSwarm, mw_kad::Event>;
pub type LpNode = Node<LpSwarm, lp_kad::Event>;

impl<S: 'static, E> Node<S, E> {
    /// Runs `f` on the swarm, in its task.
    pub async fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut S) -> R + Send + 'static) -> R {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .expect("node alive");
        rx.await.expect("node replied")
    }

    /// Waits (bounded by [`WAIT`]) for an event `f` picks, dropping the others.
    pub async fn wait<R>(&mut self, what: &str, mut f: impl FnMut(Instant, &E) -> Option<R>) -> R {
        let events = &mut self.events;
        tokio::time::timeout(WAIT, async {
            loop {
                let (at, ev) = events.recv().await.expect("node alive");
                if let Some(r) = f(at, &ev) {
                    return r;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// The node's libp2p peer id.
    pub fn lp_peer(&self) -> libp2p::PeerId {
        to_lp(&self.peer)
    }
}

impl<S, E> Drop for Node<S, E> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn to_lp(p: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(p.as_bytes()).expect("peer id bytes")
}

pub fn to_mw(p: &libp2p::PeerId) -> PeerId {
    PeerId::from_bytes(&p.to_bytes()).expect("peer id bytes")
}

pub fn lp_addr(a: &Multiaddr) -> libp2p::Multiaddr {
    a.to_string().parse().expect("address parses in libp2p")
}

pub fn mw_addr(a: &libp2p::Multiaddr) -> Multiaddr {
    a.to_string().parse().expect("address parses in meshwire")
}

/// A meshwire node with identify and kademlia, listening on loopback QUIC.
pub async fn meshwire_node(config: mw_kad::Config) -> MwNode {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let behaviour = Mw {
        identify: meshwire_identify::Behaviour::new(meshwire_identify::Config::from_public_key(
            key.public(),
        )),
        kad: mw_kad::Behaviour::new(peer, config),
    };
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("transport");
    let swarm_config = SwarmConfig {
        idle_connection_timeout: Some(IDLE_TIMEOUT),
        ..SwarmConfig::default()
    };
    let mut swarm = Swarm::new(transport, behaviour, swarm_config);
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd<MwSwarm>>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(f) => f(&mut swarm),
                    None => break,
                },
                ev = swarm.next_event() => {
                    if let SwarmEvent::Behaviour(MwEvent::Kad(e)) = ev {
                        let _ = ev_tx.send((Instant::now(), e));
                    }
                }
            }
        }
    });
    Node {
        peer,
        addr,
        cmds: cmd_tx,
        events: ev_rx,
        task,
    }
}

/// A rust-libp2p node with identify and kademlia (server mode), listening on loopback QUIC.
pub async fn libp2p_node() -> LpNode {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let mut kad = lp_kad::Behaviour::with_config(
                peer,
                lp_kad::store::MemoryStore::new(peer),
                lp_kad::Config::new(lp_kad::PROTOCOL_NAME),
            );
            kad.set_mode(Some(lp_kad::Mode::Server));
            Lp {
                identify: lp_identify::Behaviour::new(lp_identify::Config::new(
                    "ipfs/0.1.0".into(),
                    key.public(),
                )),
                kad,
            }
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    let peer = to_mw(swarm.local_peer_id());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .expect("listen");
    let addr = loop {
        if let LpSwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    swarm.add_external_address(addr.clone());
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd<LpSwarm>>();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(f) => f(&mut swarm),
                    None => break,
                },
                ev = swarm.select_next_some() => match ev {
                    LpSwarmEvent::Behaviour(LpEvent::Kad(e)) => {
                        let _ = ev_tx.send((Instant::now(), e));
                    }
                    LpSwarmEvent::Behaviour(LpEvent::Identify(lp_identify::Event::Received {
                        peer_id,
                        info,
                        ..
                    })) if info.protocols.contains(&lp_kad::PROTOCOL_NAME) => {
                        for a in info.listen_addrs {
                            swarm.behaviour_mut().kad.add_address(&peer_id, a);
                        }
                    }
                    _ => {}
                },
            }
        }
    });
    Node {
        peer,
        addr: mw_addr(&addr),
        cmds: cmd_tx,
        events: ev_rx,
        task,
    }
}

/// Waits for meshwire query `id` to finish; returns its result, statistics and the time the
/// event was received.
pub async fn mw_finished(
    node: &mut MwNode,
    id: mw_kad::QueryId,
) -> (mw_kad::QueryResult, mw_kad::QueryStats, Instant) {
    node.wait(&format!("meshwire query {id}"), |at, e| match e {
        mw_kad::Event::QueryFinished {
            id: q,
            result,
            stats,
            ..
        } if *q == id => Some((result.clone(), *stats, at)),
        _ => None,
    })
    .await
}

/// One progress report of a rust-libp2p query.
pub struct LpStep {
    pub result: lp_kad::QueryResult,
    pub stats: lp_kad::QueryStats,
    pub at: Instant,
}

/// Collects every progress report of rust-libp2p query `id`, up to its last.
pub async fn lp_finished(node: &mut LpNode, id: lp_kad::QueryId) -> Vec<LpStep> {
    let mut steps = Vec::new();
    loop {
        let (step, last) = node
            .wait(&format!("libp2p query {id:?}"), |at, e| match e {
                lp_kad::Event::OutboundQueryProgressed {
                    id: q,
                    result,
                    stats,
                    step,
                } if *q == id => Some((
                    LpStep {
                        result: result.clone(),
                        stats: *stats,
                        at,
                    },
                    step.last,
                )),
                _ => None,
            })
            .await;
        steps.push(step);
        if last {
            return steps;
        }
    }
}

/// Bootstraps meshwire `node` through `peer` at `addr`; waits for the bootstrap to finish.
pub async fn mw_bootstrap(node: &mut MwNode, peer: PeerId, addr: Multiaddr) {
    let id = node
        .call(move |s| {
            let kad = &mut s.behaviour_mut().kad;
            kad.add_address(peer, addr);
            kad.bootstrap().expect("a known peer")
        })
        .await;
    let (result, _, _) = mw_finished(node, id).await;
    assert!(
        matches!(result, mw_kad::QueryResult::Bootstrap(Ok(_))),
        "meshwire bootstrap: {result:?}"
    );
}

/// Bootstraps rust-libp2p `node` through `peer` at `addr`; waits for the bootstrap to finish.
pub async fn lp_bootstrap(node: &mut LpNode, peer: PeerId, addr: Multiaddr) {
    let (peer, addr) = (to_lp(&peer), lp_addr(&addr));
    let id = node
        .call(move |s| {
            let kad = &mut s.behaviour_mut().kad;
            kad.add_address(&peer, addr);
            kad.bootstrap().expect("a known peer")
        })
        .await;
    for step in lp_finished(node, id).await {
        assert!(
            matches!(step.result, lp_kad::QueryResult::Bootstrap(Ok(_))),
            "libp2p bootstrap: {:?}",
            step.result
        );
    }
}
