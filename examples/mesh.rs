//! The README's demo: a small full mesh of meshwire nodes on loopback.
//!
//! `cargo run --example mesh [-- N]` starts N nodes (default 8) in one process, each with its
//! own identity and QUIC listener. Every node dials every other node (authenticated with the
//! libp2p TLS handshake), pings each peer over `/ipfs/ping/1.0.0` streams (32 random bytes,
//! echoed back, as libp2p ping does), and the demo prints a table of peers and round-trip
//! times, then exits 0. Any failure exits non-zero.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire::core::{Keypair, PeerId};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
use meshwire::transport::{Connection, Multiaddr, Transport, TransportEvent, TransportExt};
use tokio::sync::mpsc;

const PING: &str = "/ipfs/ping/1.0.0";
const PINGS_PER_PEER: usize = 5;
const T: Duration = Duration::from_secs(5);

/// Answers pings on every stream the peer opens on `conn`.
fn serve_pings(conn: Connection) {
    tokio::spawn(async move {
        while let Ok((_, mut s)) = conn.accept_negotiated(&[PING], T).await {
            tokio::spawn(async move {
                let mut buf = [0u8; 32];
                while s.read_exact(&mut buf).await.is_ok() {
                    if s.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Pings the peer of `conn` a few times on one stream; returns the round-trip times.
async fn ping(
    conn: &Connection,
) -> Result<Vec<Duration>, Box<dyn std::error::Error + Send + Sync>> {
    let (_, mut s) = conn.open_negotiated([PING], T).await?;
    let mut rtts = Vec::new();
    for _ in 0..PINGS_PER_PEER {
        let payload: [u8; 32] = rand::random();
        let start = Instant::now();
        s.write_all(&payload).await?;
        let mut back = [0u8; 32];
        s.read_exact(&mut back).await?;
        if back != payload {
            return Err("ping echo differs".into());
        }
        rtts.push(start.elapsed());
    }
    s.close().await?;
    Ok(rtts)
}

struct Report {
    node: usize,
    peer: PeerId,
    rtts: Vec<Duration>,
    /// Held until the whole mesh is done, so no connection closes early.
    _conn: Connection,
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

    let mut transports = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let mut ids: Vec<PeerId> = Vec::new();
    for _ in 0..n {
        let key = Keypair::generate();
        ids.push(key.peer_id());
        let mut t = QuicTransport::new(key, QuicConfig::default())?;
        t.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
        match t.next_event().await {
            TransportEvent::NewListenAddr { addr, .. } => addrs.push(addr),
            other => return Err(format!("unexpected event {other:?}").into()),
        }
        transports.push(t);
    }

    let started = Instant::now();
    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<Result<Report, String>>();
    for (i, mut t) in transports.into_iter().enumerate() {
        // Node i dials every node before it; it accepts the dials of the nodes after it.
        for j in 0..i {
            let dial = t.dial(&addrs[j], Some(ids[j]))?;
            let tx = report_tx.clone();
            let expected = ids[j];
            tokio::spawn(async move {
                let result = async {
                    let conn = dial.await.map_err(|e| e.to_string())?;
                    if conn.peer_id() != expected {
                        return Err(format!(
                            "node {i}: dialed {expected}, reached {}",
                            conn.peer_id()
                        ));
                    }
                    serve_pings(conn.clone());
                    let rtts = ping(&conn).await.map_err(|e| e.to_string())?;
                    Ok(Report {
                        node: i,
                        peer: expected,
                        rtts,
                        _conn: conn,
                    })
                }
                .await;
                let _ = tx.send(result);
            });
        }
        let tx = report_tx.clone();
        tokio::spawn(async move {
            loop {
                match t.next_event().await {
                    TransportEvent::Incoming { upgrade, .. } => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let result = async {
                                let conn = upgrade.await.map_err(|e| e.to_string())?;
                                serve_pings(conn.clone());
                                let rtts = ping(&conn).await.map_err(|e| e.to_string())?;
                                Ok(Report {
                                    node: i,
                                    peer: conn.peer_id(),
                                    rtts,
                                    _conn: conn,
                                })
                            }
                            .await;
                            let _ = tx.send(result);
                        });
                    }
                    TransportEvent::ListenerClosed { .. } => break,
                    TransportEvent::NewListenAddr { .. } => {}
                }
            }
        });
    }
    drop(report_tx);

    // Every connection is pinged from both ends: n·(n−1) reports.
    let expected_reports = n * (n - 1);
    let mut per_node: BTreeMap<usize, Vec<(PeerId, Vec<Duration>)>> = BTreeMap::new();
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    let mut got = 0;
    let mut conns = Vec::new();
    while got < expected_reports {
        tokio::select! {
            r = report_rx.recv() => match r {
                Some(Ok(rep)) => {
                    per_node.entry(rep.node).or_default().push((rep.peer, rep.rtts));
                    conns.push(rep._conn);
                    got += 1;
                }
                Some(Err(e)) => return Err(format!("mesh failed: {e}").into()),
                None => break,
            },
            _ = &mut deadline => return Err(format!("timed out with {got}/{expected_reports} pings done").into()),
        }
    }
    let elapsed = started.elapsed();

    println!("meshwire mesh: {n} nodes on loopback, full mesh over QUIC + libp2p TLS, {PING}");
    println!();
    println!(
        "{:<5} {:<54} {:<36} {:>5} {:>10} {:>10}",
        "node", "peer id", "listen address", "peers", "rtt med", "rtt max"
    );
    for (i, peers) in &per_node {
        let mut all: Vec<Duration> = peers.iter().flat_map(|(_, r)| r.iter().copied()).collect();
        all.sort();
        let med = all[all.len() / 2];
        let max = all[all.len() - 1];
        println!(
            "{:<5} {:<54} {:<36} {:>5} {:>8.3}ms {:>8.3}ms",
            i,
            ids[*i].to_string(),
            addrs[*i].to_string(),
            peers.len(),
            med.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        for (p, _) in peers {
            if !ids.contains(p) {
                return Err(format!("node {i} reports an unknown peer {p}").into());
            }
        }
        if peers.len() != n - 1 {
            return Err(
                format!("node {i} reached {} peers, expected {}", peers.len(), n - 1).into(),
            );
        }
    }
    println!();
    println!(
        "{} connections, {} pings, all echoed, in {:.0} ms",
        n * (n - 1) / 2,
        expected_reports * PINGS_PER_PEER,
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}
