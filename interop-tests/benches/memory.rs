//! Memory per connection and per stream: one node accepts `MESHWIRE_BENCH_CONNS` (default
//! 1,000) QUIC connections from as many peers, then `MESHWIRE_BENCH_STREAMS_PER_CONN`
//! (default 10) idle streams on each, and holds them; the node's resident memory is read
//! before, after the connections and after the streams. Meshwire and rust-libp2p (with
//! `libp2p-stream`, its own way to hold raw streams), the same counts, in one run.
//!
//! Each node runs in a child process of its own (this binary, re-run with `--listen` or
//! `--dial`), so that one stack's allocations never count against the other's; the parent
//! reads the listening process's RSS from `/proc/<pid>/statm`. The listener accepts every
//! stream (meshwire: `StreamControl::accept`; rust-libp2p: `libp2p_stream::Control::accept`),
//! answers the one byte the dialer writes on it, and keeps it; the dialer opens the streams
//! one after another, each once the previous one was answered. Neither side has limits that would refuse a connection or a
//! stream at these counts, and no idle timeout.
//!
//! Run with `cargo bench -p interop-tests --bench memory`. Summary lines:
//! `memory <stack> per connection <KiB> per stream <bytes>` and
//! `memory meshwire / rust-libp2p: connection <x>x, stream <x>x`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::connmgr::{ConnManagerHandle, NullConnMgr};
use meshwire_swarm::rcmgr::Limits;
use meshwire_swarm::{DummyBehaviour, StreamProtocol, Swarm, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::{with_peer_id, Multiaddr};

const PROTO: &str = "/bench/memory/1";
/// Connections established at once by a dialer.
const BATCH: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

// ---------------------------------------------------------------------------------------------
// The listening node: prints `ADDR <multiaddr>`, then `HELD <streams>` as streams arrive.

fn meshwire_config() -> SwarmConfig {
    SwarmConfig {
        idle_connection_timeout: None,
        max_established_total: usize::MAX,
        max_established_incoming: usize::MAX,
        max_established_outgoing: usize::MAX,
        max_inbound_streams_per_connection: 10_000,
        // A load generator: no per-connection limit on the rate of new streams.
        inbound_stream_rate: None,
        resource_limits: Limits::unlimited(),
        ..SwarmConfig::default()
    }
}

fn meshwire_swarm() -> Swarm<DummyBehaviour> {
    let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).expect("quic");
    let cm = ConnManagerHandle::new(NullConnMgr).to_dyn();
    Swarm::with_conn_manager(transport, DummyBehaviour, meshwire_config(), cm)
}

async fn listen_meshwire(total: usize) {
    let mut swarm = meshwire_swarm();
    let mut incoming = swarm
        .stream_control()
        .accept(StreamProtocol::new(PROTO))
        .expect("first registration");
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break with_peer_id(&address, swarm.local_peer_id());
        }
    };
    println!("ADDR {addr}");
    tokio::spawn(async move {
        loop {
            swarm.next_event().await;
        }
    });
    let mut held = Vec::new();
    while let Some(mut s) = incoming.next().await {
        if ack(&mut s.stream).await {
            held.push(s);
            report_held(held.len(), total);
        }
    }
}

/// Prints `HELD <n>` every 100 streams and at `total` (the parent reads the listener's output only when
/// it waits for it: a line per stream would fill the pipe and stall the listener).
fn report_held(n: usize, total: usize) {
    if n.is_multiple_of(100) || n == total {
        println!("HELD {n}");
    }
}

/// Reads the dialer's byte and answers with one: the stream is then known to be held.
async fn ack<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(s: &mut S) -> bool {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.is_ok() && s.write_all(&b).await.is_ok() && s.flush().await.is_ok()
}

/// Opens streams one after another (rust-libp2p's `libp2p-stream` drops an inbound stream
/// that arrives while the previous one is still being handed over): each is held once its
/// byte is answered; a dropped one is opened again (counted).
async fn open_held<S, F, Fut>(mut open: F) -> (S, usize)
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let mut retries = 0;
    loop {
        let mut s = open().await;
        let mut b = [1u8; 1];
        if s.write_all(&b).await.is_ok()
            && s.flush().await.is_ok()
            && s.read_exact(&mut b).await.is_ok()
        {
            return (s, retries);
        }
        retries += 1;
    }
}

fn libp2p_swarm() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build()
}

async fn listen_libp2p(total: usize) {
    let mut swarm = libp2p_swarm();
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(libp2p::StreamProtocol::new(PROTO))
        .expect("accept");
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
            swarm.select_next_some().await
        {
            break address.with(libp2p::multiaddr::Protocol::P2p(*swarm.local_peer_id()));
        }
    };
    println!("ADDR {addr}");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut held = Vec::new();
    while let Some((peer, mut s)) = incoming.next().await {
        if ack(&mut s).await {
            held.push((peer, s));
            report_held(held.len(), total);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dialing peers: `conns` swarms connect in batches, print `CONNECTED`, wait for a line on
// stdin, open `streams` streams each (one byte written on each), print `OPENED`, then hold.

async fn dial_meshwire(addr: Multiaddr, conns: usize, streams: usize) {
    let peer: PeerId = meshwire_transport::split_peer_id(&addr, None)
        .ok()
        .and_then(|(_, p)| p)
        .expect("address with /p2p");
    let mut controls = Vec::new();
    for batch in (0..conns).collect::<Vec<_>>().chunks(BATCH) {
        let mut waiting = Vec::new();
        for _ in batch {
            let mut swarm = meshwire_swarm();
            controls.push(swarm.stream_control());
            swarm.dial(addr.clone()).expect("dial");
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut tx = Some(tx);
                loop {
                    match swarm.next_event().await {
                        SwarmEvent::ConnectionEstablished { .. } => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        SwarmEvent::OutgoingConnectionError { error, .. } => {
                            panic!("dial failed: {error}")
                        }
                        _ => {}
                    }
                }
            });
            waiting.push(rx);
        }
        for rx in waiting {
            rx.await.expect("connected");
        }
    }
    println!("CONNECTED");
    wait_for_line().await;
    let (mut held, mut retries) = (Vec::new(), 0);
    for control in &controls {
        for _ in 0..streams {
            let (s, r) = open_held(|| async {
                control
                    .open_stream(peer, StreamProtocol::new(PROTO))
                    .await
                    .expect("stream")
            })
            .await;
            held.push(s);
            retries += r;
        }
    }
    println!("OPENED {retries}");
    std::future::pending::<()>().await;
}

async fn dial_libp2p(addr: libp2p::Multiaddr, conns: usize, streams: usize) {
    let peer = match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("address without /p2p"),
    };
    let mut controls = Vec::new();
    for batch in (0..conns).collect::<Vec<_>>().chunks(BATCH) {
        let mut waiting = Vec::new();
        for _ in batch {
            let mut swarm = libp2p_swarm();
            controls.push(swarm.behaviour().new_control());
            swarm.dial(addr.clone()).expect("dial");
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut tx = Some(tx);
                loop {
                    match swarm.select_next_some().await {
                        libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        libp2p::swarm::SwarmEvent::OutgoingConnectionError { error, .. } => {
                            panic!("dial failed: {error}")
                        }
                        _ => {}
                    }
                }
            });
            waiting.push(rx);
        }
        for rx in waiting {
            rx.await.expect("connected");
        }
    }
    println!("CONNECTED");
    wait_for_line().await;
    let (mut held, mut retries) = (Vec::new(), 0);
    for control in &mut controls {
        for _ in 0..streams {
            let (s, r) = open_held(|| {
                let mut control = control.clone();
                async move {
                    control
                        .open_stream(peer, libp2p::StreamProtocol::new(PROTO))
                        .await
                        .expect("stream")
                }
            })
            .await;
            held.push(s);
            retries += r;
        }
    }
    println!("OPENED {retries}");
    std::future::pending::<()>().await;
}

async fn wait_for_line() {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await
    .expect("stdin reader");
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// A child process with its stdout read line by line.
struct ChildLines {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ChildLines {
    fn spawn(args: &[&str]) -> Self {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        ChildLines { child, lines }
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    fn until(&mut self, prefix: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("child output");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
        panic!("child ended before {prefix}");
    }

    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "go").expect("write to child");
    }
}

impl Drop for ChildLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until RSS of `pid` stops growing (three equal readings 200 ms apart, at most 5 s).
fn settled_rss(pid: u32) -> u64 {
    let start = Instant::now();
    let mut last = rss(pid);
    let mut same = 0;
    while same < 3 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        let now = rss(pid);
        same = if now.abs_diff(last) < 64 * 1024 {
            same + 1
        } else {
            0
        };
        last = now;
    }
    last
}

/// One stack: bytes per connection and per stream on the listener.
fn measure(stack: &str, conns: usize, per_conn: usize) -> (f64, f64) {
    let streams = conns * per_conn;
    let mut listener = ChildLines::spawn(&["--listen", stack, &streams.to_string()]);
    let addr = listener.until("ADDR");
    let pid = listener.child.id();
    let base = settled_rss(pid);
    let mut dialer = ChildLines::spawn(&[
        "--dial",
        stack,
        &addr,
        &conns.to_string(),
        &per_conn.to_string(),
    ]);
    dialer.until("CONNECTED");
    let with_conns = settled_rss(pid);
    dialer.go();
    let retries = dialer.until("OPENED");
    loop {
        let held: usize = listener.until("HELD").parse().unwrap_or(0);
        if held >= streams {
            break;
        }
    }
    let with_streams = settled_rss(pid);
    let per_connection = with_conns.saturating_sub(base) as f64 / conns as f64;
    let per_stream = with_streams.saturating_sub(with_conns) as f64 / streams.max(1) as f64;
    println!(
        "memory {stack:<11} listener RSS {:.1} MiB idle, {:.1} MiB with {conns} connections, {:.1} MiB with {streams} streams ({retries} streams opened again)",
        base as f64 / 1048576.0,
        with_conns as f64 / 1048576.0,
        with_streams as f64 / 1048576.0
    );
    (per_connection, per_stream)
}

fn run_child(args: &[String]) -> bool {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    };
    match args {
        [flag, stack, total] if flag == "--listen" => {
            let total = total.parse().expect("streams");
            match stack.as_str() {
                "meshwire" => rt().block_on(listen_meshwire(total)),
                _ => rt().block_on(listen_libp2p(total)),
            }
            true
        }
        [flag, stack, addr, conns, streams] if flag == "--dial" => {
            let conns = conns.parse().expect("connections");
            let streams = streams.parse().expect("streams");
            match stack.as_str() {
                "meshwire" => {
                    rt().block_on(dial_meshwire(addr.parse().expect("addr"), conns, streams))
                }
                _ => rt().block_on(dial_libp2p(addr.parse().expect("addr"), conns, streams)),
            }
            true
        }
        _ => false,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let own: Vec<String> = args.iter().filter(|a| *a != "--bench").cloned().collect();
    if run_child(&own) {
        return;
    }
    let conns = env_usize("MESHWIRE_BENCH_CONNS", 1000).max(1);
    let per_conn = env_usize("MESHWIRE_BENCH_STREAMS_PER_CONN", 10);
    let (mc, ms) = measure("meshwire", conns, per_conn);
    let (lc, ls) = measure("rust-libp2p", conns, per_conn);
    println!(
        "memory per connection and per stream on the listening node ({conns} connections, {} idle streams)",
        conns * per_conn
    );
    println!(
        "memory meshwire    per connection {:7.1} KiB  per stream {:6.0} B",
        mc / 1024.0,
        ms
    );
    println!(
        "memory rust-libp2p per connection {:7.1} KiB  per stream {:6.0} B",
        lc / 1024.0,
        ls
    );
    println!(
        "memory meshwire / rust-libp2p: connection {:.2}x, stream {:.2}x",
        mc / lc,
        ms / ls
    );
}
