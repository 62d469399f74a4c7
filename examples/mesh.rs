//! The README's demo: a small full mesh of meshwire swarms on loopback.
//!
//! `cargo run --example mesh [-- N]` starts N nodes (default 8) in one process, each a `Swarm`
//! over QUIC whose behaviour composes ping and identify with `#[derive(NetworkBehaviour)]`.
//! Every node dials every other node, pings it over `/ipfs/ping/1.0.0` and identifies it over
//! `/ipfs/id/1.0.0`; the demo prints a table of peers, round-trip times and protocols, then
//! exits 0. Any failure, or no full mesh within 30 s, exits non-zero.
//!
//! Each node is made by the `SwarmBuilder` and runs on its own task (`Swarm::spawn`); the
//! demo commands it through its `SwarmHandle` and reads its event receiver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meshwire::prelude::*;
use tokio::sync::mpsc;

/// Pings per peer before a node counts as done.
const PINGS_PER_PEER: usize = 3;

/// Every node's behaviour: ping and identify, composed.
#[derive(NetworkBehaviour)]
struct Node {
    ping: ping::Behaviour,
    identify: identify::Behaviour,
}

fn new_swarm() -> Result<Swarm<Node>, Box<dyn std::error::Error + Send + Sync>> {
    let swarm = SwarmBuilder::with_new_identity()
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)
        .build(|ctx| Node {
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(100)),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/meshwire-demo/1.0.0",
                ctx.public(),
            )),
        })?;
    Ok(swarm)
}

/// What the demo learns about one (node, peer) pair.
#[derive(Default)]
struct PeerReport {
    rtts: Vec<Duration>,
    agent: Option<String>,
    protocols: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("usage: mesh [N], got {a:?}"))?,
        None => 8,
    };
    if n < 2 {
        return Err("a mesh needs at least 2 nodes".into());
    }

    // Start every node on its own task and learn its listen address.
    let mut handles = Vec::new();
    let mut receivers = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let mut ids: Vec<PeerId> = Vec::new();
    for _ in 0..n {
        let (handle, mut events) = new_swarm()?.spawn();
        let addr = loop {
            match events.recv().await {
                Some(SwarmEvent::NewListenAddr { address, .. }) => break address,
                Some(_) => {}
                None => return Err("a node stopped".into()),
            }
        };
        ids.push(handle.local_peer_id());
        addrs.push(addr);
        handles.push(handle);
        receivers.push(events);
    }

    // Node i dials every node before it, through its handle; every node's events are
    // gathered into one channel.
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<NodeEvent, String>)>();
    let mut tasks = Vec::new();
    for (i, mut events) in receivers.into_iter().enumerate() {
        for j in 0..i {
            handles[i].dial(with_peer_id(&addrs[j], ids[j])).await?;
        }
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let sent = match ev {
                    SwarmEvent::Behaviour(ev) => tx.send((i, Ok(ev))),
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        tx.send((i, Err(format!("dial failed: {error}"))))
                    }
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);

    let mut reports: BTreeMap<usize, HashMap<PeerId, PeerReport>> = BTreeMap::new();
    let done = |reports: &BTreeMap<usize, HashMap<PeerId, PeerReport>>| {
        reports.len() == n
            && reports.values().all(|peers| {
                peers.len() == n - 1
                    && peers
                        .values()
                        .all(|r| r.rtts.len() >= PINGS_PER_PEER && r.agent.is_some())
            })
    };
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while !done(&reports) {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some((i, Ok(NodeEvent::Ping(ping::Event { peer, result: Ok(rtt), .. })))) => {
                    reports.entry(i).or_default().entry(peer).or_default().rtts.push(rtt);
                }
                Some((i, Ok(NodeEvent::Ping(ping::Event { peer, result: Err(e), .. })))) => {
                    return Err(format!("node {i}: ping of {peer} failed: {e}").into());
                }
                Some((i, Ok(NodeEvent::Identify(identify::Event::Received { peer, info, .. })))) => {
                    if info.public_key.to_peer_id() != peer {
                        return Err(format!("node {i}: {peer} identified with another key").into());
                    }
                    let r = reports.entry(i).or_default().entry(peer).or_default();
                    r.agent = Some(info.agent_version.clone());
                    r.protocols = info.protocols.iter().map(|p| p.to_string()).collect();
                }
                Some((i, Ok(NodeEvent::Identify(identify::Event::Error { peer, error, .. })))) => {
                    return Err(format!("node {i}: identify of {peer} failed: {error}").into());
                }
                Some((_, Ok(_))) => {}
                Some((i, Err(e))) => return Err(format!("node {i}: {e}").into()),
                None => return Err("every node stopped".into()),
            },
            _ = &mut deadline => {
                let got: usize = reports.values().map(|p| p.len()).sum();
                return Err(format!("no full mesh within 30 s ({got}/{} pairs heard from)", n * (n - 1)).into());
            }
        }
    }
    let elapsed = started.elapsed();
    for t in &tasks {
        t.abort();
    }
    for h in &handles {
        h.shutdown().await?;
    }

    println!("meshwire mesh: {n} swarms on loopback, QUIC + libp2p TLS, ping + identify composed with #[derive(NetworkBehaviour)]");
    println!();
    println!(
        "{:<5} {:<54} {:<32} {:>5} {:>10} {:>10}",
        "node", "peer id", "listen address", "peers", "rtt med", "rtt max"
    );
    let mut protocols = BTreeSet::new();
    let mut agents = BTreeSet::new();
    for (i, peers) in &reports {
        let mut all: Vec<Duration> = peers
            .values()
            .flat_map(|r| r.rtts.iter().copied())
            .collect();
        all.sort();
        let med = all[all.len() / 2];
        let max = all[all.len() - 1];
        for (p, r) in peers {
            if !ids.contains(p) {
                return Err(format!("node {i} reports an unknown peer {p}").into());
            }
            protocols.extend(r.protocols.iter().cloned());
            agents.extend(r.agent.iter().cloned());
        }
        println!(
            "{:<5} {:<54} {:<32} {:>5} {:>8.3}ms {:>8.3}ms",
            i,
            ids[*i].to_string(),
            addrs[*i].to_string(),
            peers.len(),
            med.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    println!();
    println!(
        "protocols identified: {}",
        protocols.into_iter().collect::<Vec<_>>().join(", ")
    );
    println!(
        "agents identified:    {}",
        agents.into_iter().collect::<Vec<_>>().join(", ")
    );
    println!(
        "{} connections, {} peer pairs pinged ({PINGS_PER_PEER}+ pings each) and identified, in {:.0} ms",
        n * (n - 1) / 2,
        n * (n - 1),
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}
