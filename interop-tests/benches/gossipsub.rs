//! Gossipsub at 100 nodes, meshwire against rust-libp2p 0.57 (`libp2p-gossipsub` 0.50), in
//! one run: delivery rate, duplicates per delivered message, delivery latency (p50/p99) and
//! memory per node.
//!
//! Each implementation's `MESHWIRE_BENCH_NODES` (default 100) nodes run in a child process of
//! their own (this binary, re-run with `--child <implementation>`), on loopback QUIC: one
//! QUIC endpoint per node, every node dials `MESHWIRE_BENCH_DIALS` (default 6) others drawn
//! from a fixed seed (the same graph for both), all subscribe to one topic, and after the
//! meshes have formed `MESHWIRE_BENCH_MESSAGES` (default 100) messages are published, one
//! every 200 ms, by nodes in turn. Both sides: D = 8, D_lo = 6, D_hi = 12, heartbeat 500 ms,
//! flood publishing on (both defaults), strict signing, default message ids, `/meshsub/1.2.0`
//! among themselves.
//!
//! Three configurations, each run for both implementations: messages of 256 bytes (under
//! both implementations' IDONTWANT threshold of 1,000 bytes: no IDONTWANT), of 2,048 bytes
//! (IDONTWANT on first receipt), and of 2,048 bytes with IDONTWANT off on both sides
//! (threshold `usize::MAX`; what 2,048 bytes cost without it). A fourth, `choke`, runs
//! 256-byte messages three times: meshwire as in `small`, meshwire with choking on (a
//! meshwire extension, `docs/pubsub.md`: each node takes full messages from at most 4 mesh
//! peers, message ids from the others), and rust-libp2p. `MESHWIRE_BENCH_ROWS` picks
//! some (`small,large,large-off,choke`, comma-separated; default all).
//!
//! `MESHWIRE_BENCH_ROUNDS=N` (with the `choke` row) runs that row's three children `N` times,
//! alternating them (round 1: meshwire+choke, rust-libp2p, meshwire; round 2 starts with
//! rust-libp2p, and so on), so that on a shared machine each variant meets the same load
//! over the run. Each round prints the usual lines for its children, then
//! `gossipsub choke round <r>/<N> (load <start> -> <end>; order ...): ...` with its p50/p99
//! and the ratios to that round's rust-libp2p child, and the run ends with
//! `gossipsub choke rounds <N> median <variant> / rust-libp2p: p50 <x> p99 <x> (p99 <= 1.00x
//! in <k> of <N> rounds; ...)`: the medians of the per-round ratios.
//!
//! - delivery: (message, receiver) pairs received over the `(nodes − 1) × messages` expected;
//! - duplicates: copies received after the first, per delivered message — meshwire's
//!   `pubsub_messages_duplicate_total` counter, rust-libp2p's
//!   `topic_msg_recv_counts_unfiltered` minus `topic_msg_recv_counts` (its gossipsub `metrics`
//!   feature), summed over the nodes;
//! - IDONTWANT: message ids received in IDONTWANT per delivered message (meshwire's
//!   `pubsub_idontwant_received_total`, rust-libp2p's `idontwant_msgs_ids`);
//! - latency: publication to the receiver's message event, one process clock;
//! - memory per node: the child's resident memory after the run minus before the nodes were
//!   built, over the node count (so the runtime and the binary do not count); the CPU time
//!   of each child is printed too.
//!
//! Run with `cargo bench -p interop-tests --bench gossipsub`. Summary lines per configuration:
//! `gossipsub <row> <implementation> delivery <%> duplicates <x> idontwant <x> p50 <ms> p99 <ms>
//! memory/node <KiB>` and `gossipsub <row> meshwire / rust-libp2p: ...` with the ratios; the
//! `choke` row adds `gossipsub choke meshwire+choke ...` (with the mean number of mesh peers
//! each node chokes and the fallback IWANTs per delivered message) and the ratios of
//! `meshwire+choke` to rust-libp2p and to meshwire without choking.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub as lp_gs;
use libp2p::swarm::SwarmEvent as LpSwarmEvent;
use libp2p::SwarmBuilder;
use meshwire_core::Keypair;
use meshwire_pubsub::{Behaviour, Config, Event, GossipsubMetrics, TopicHash};
use meshwire_swarm::{DialOpts, Swarm, SwarmConfig, SwarmEvent, SwarmHandle};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use meshwire_transport::Multiaddr;
use tokio::sync::mpsc;

const TOPIC: &str = "bench/gossip";
const HEARTBEAT: Duration = Duration::from_millis(500);
/// One message every 200 ms: 100 nodes × D copies × a signature check each stay well within
/// the shared 2 cores, so latency is the protocols' and transports', not a CPU backlog (at one
/// every 50 ms both implementations queue hundreds of milliseconds on this machine).
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
const SETTLE: Duration = Duration::from_secs(6);
const DRAIN: Duration = Duration::from_secs(4);
const D: usize = 8;
const D_LO: usize = 6;
const D_HI: usize = 12;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CPU time (user + system) of this process so far, in milliseconds.
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')').
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 Hz.
    (ticks(11) + ticks(12)) * 10
}

/// The dial graph: node `i` dials `dials` distinct others, from a fixed seed.
fn graph(n: usize, dials: usize) -> Vec<Vec<usize>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let mut out: Vec<usize> = Vec::new();
            while out.len() < dials.min(n - 1) {
                let j = (next() % n as u64) as usize;
                if j != i && !out.contains(&j) {
                    out.push(j);
                }
            }
            out
        })
        .collect()
}

/// A message event: (receiving node, message number, when).
type Receipt = (usize, u64, Instant);

/// The message size of this child (`MESHWIRE_BENCH_SIZE`, set by the parent per row).
fn message_size() -> usize {
    env_usize("MESHWIRE_BENCH_SIZE", 256)
}

/// The IDONTWANT threshold of this child (`MESHWIRE_BENCH_IDONTWANT`: `off` for none, else
/// both implementations' default, 1,000 bytes).
fn idontwant_threshold() -> usize {
    match std::env::var("MESHWIRE_BENCH_IDONTWANT").as_deref() {
        Ok("off") => usize::MAX,
        _ => 1000,
    }
}

/// Whether this meshwire child chokes (`MESHWIRE_BENCH_CHOKE=on`).
fn choking() -> bool {
    std::env::var("MESHWIRE_BENCH_CHOKE").as_deref() == Ok("on")
}

/// The choke settings of a meshwire child: the defaults, with `max_unchoked`,
/// `iwant_timeout` (ms) and `eager_from_author` overridable by `MESHWIRE_BENCH_CHOKE_MAX`,
/// `MESHWIRE_BENCH_CHOKE_IWANT_MS` and `MESHWIRE_BENCH_CHOKE_EAGER` (`on`/`off`), for
/// exploring the trade between duplicates and latency.
fn choke_config() -> meshwire_pubsub::ChokeConfig {
    let defaults = meshwire_pubsub::ChokeConfig::default();
    let max_unchoked = env_usize("MESHWIRE_BENCH_CHOKE_MAX", defaults.max_unchoked);
    let iwant_ms = env_usize(
        "MESHWIRE_BENCH_CHOKE_IWANT_MS",
        defaults.iwant_timeout.as_millis() as usize,
    );
    meshwire_pubsub::ChokeConfig {
        enabled: choking(),
        max_unchoked,
        min_unchoked: defaults.min_unchoked.min(max_unchoked),
        iwant_timeout: Duration::from_millis(iwant_ms as u64),
        eager_from_author: match std::env::var("MESHWIRE_BENCH_CHOKE_EAGER").as_deref() {
            Ok("on") => true,
            Ok("off") => false,
            _ => defaults.eager_from_author,
        },
        ..defaults
    }
}

fn payload(number: u64) -> Vec<u8> {
    let mut data = number.to_le_bytes().to_vec();
    data.resize(message_size(), 0x5A);
    data
}

fn number_of(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

// ---------------------------------------------------------------------------------------------
// meshwire nodes

struct MwNode {
    handle: SwarmHandle<Behaviour>,
    addr: Multiaddr,
    peer: meshwire_core::PeerId,
    metrics: GossipsubMetrics,
}

async fn meshwire_node(index: usize, receipts: mpsc::UnboundedSender<Receipt>) -> MwNode {
    let key = Keypair::generate();
    let peer = key.peer_id();
    let config = Config::default()
        .with_mesh_n(D)
        .with_mesh_n_low(D_LO)
        .with_mesh_n_high(D_HI)
        .with_heartbeat_interval(HEARTBEAT)
        .with_heartbeat_initial_delay(HEARTBEAT)
        .with_idontwant_message_size_threshold(idontwant_threshold())
        .with_choke(choke_config());
    let mut behaviour = Behaviour::new(&key, config).expect("config");
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = GossipsubMetrics::register(&mut registry, 4);
    behaviour.set_metrics(metrics.clone());
    let transport = QuicTransport::new(key, QuicConfig::default()).expect("quic");
    let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    swarm.behaviour_mut().subscribe(TOPIC);
    let (handle, mut events) = swarm.spawn();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let SwarmEvent::Behaviour(Event::Message { message, .. }) = event {
                if let Some(n) = number_of(&message.data) {
                    let _ = receipts.send((index, n, Instant::now()));
                }
            }
        }
    });
    MwNode {
        handle,
        addr,
        peer,
        metrics,
    }
}

async fn run_meshwire(n: usize, dials: usize, messages: usize) -> Outcome {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(meshwire_node(i, tx.clone()).await);
    }
    for (i, out) in graph(n, dials).into_iter().enumerate() {
        for j in out {
            let opts = DialOpts::peer(nodes[j].peer).address(nodes[j].addr.clone());
            // Refused when `j` already dialed `i` (one connection per pair is enough).
            let _ = nodes[i].handle.dial(opts).await;
        }
    }
    tokio::time::sleep(SETTLE).await;
    let mut published = Vec::new();
    for k in 0..messages {
        let from = (k * 37) % n;
        let data = payload(k as u64);
        let at = Instant::now();
        let mut ok = false;
        for _ in 0..100 {
            let d = data.clone();
            let r = nodes[from]
                .handle
                .with_behaviour(move |b| b.publish(TOPIC, d).is_ok())
                .await
                .expect("meshwire node running");
            if r {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "meshwire node {from} could not publish");
        published.push((from, at));
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
    tokio::time::sleep(DRAIN).await;
    let topic = TopicHash::from(TOPIC);
    let duplicates: u64 = nodes
        .iter()
        .map(|n| n.metrics.duplicate_count(&topic))
        .sum();
    let idontwant: u64 = nodes
        .iter()
        .map(|n| n.metrics.idontwant_received_count())
        .sum();
    let mut mesh = 0usize;
    let (mut choked, mut fallback) = (0usize, 0u64);
    for node in &nodes {
        let t = topic.clone();
        let (m, c, f) = node
            .handle
            .with_behaviour(move |b| {
                let e = b.engine();
                (
                    e.mesh_peers(&t).count(),
                    e.choked_peers(&t).len(),
                    e.choke_stats().fallback_iwants,
                )
            })
            .await
            .expect("meshwire node running");
        mesh += m;
        choked += c;
        fallback += f;
    }
    let mut outcome = Outcome::collect(n, published, rx, (duplicates, idontwant), mesh);
    outcome.choked_avg = choked as f64 / n as f64;
    outcome.fallback_iwants = fallback;
    outcome
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p nodes

type LpCommand = Box<dyn FnOnce(&mut libp2p::Swarm<lp_gs::Behaviour>) + Send>;

struct LpNode {
    commands: mpsc::UnboundedSender<LpCommand>,
    addr: libp2p::Multiaddr,
    registry: prometheus_client_libp2p::registry::Registry,
}

impl LpNode {
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut libp2p::Swarm<lp_gs::Behaviour>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .expect("libp2p node running");
        rx.await.expect("libp2p node answered")
    }

    /// A counter family of the node's gossipsub metrics, summed over labels.
    fn counter(&self, name: &str) -> u64 {
        let mut text = String::new();
        prometheus_client_libp2p::encoding::text::encode(&mut text, &self.registry)
            .expect("encode metrics");
        let (labelled, plain) = (format!("{name}_total{{"), format!("{name}_total "));
        text.lines()
            .filter(|l| l.starts_with(&labelled) || l.starts_with(&plain))
            .filter_map(|l| l.rsplit(' ').next())
            .filter_map(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }
}

async fn libp2p_node(index: usize, receipts: mpsc::UnboundedSender<Receipt>) -> LpNode {
    let mut registry = prometheus_client_libp2p::registry::Registry::default();
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let config = lp_gs::ConfigBuilder::default()
                .mesh_n(D)
                .mesh_n_low(D_LO)
                .mesh_n_high(D_HI)
                .heartbeat_interval(HEARTBEAT)
                .heartbeat_initial_delay(HEARTBEAT)
                .validation_mode(lp_gs::ValidationMode::Strict)
                .idontwant_message_size_threshold(idontwant_threshold())
                .build()
                .expect("gossipsub config");
            lp_gs::Behaviour::new(lp_gs::MessageAuthenticity::Signed(key.clone()), config)
                .expect("gossipsub")
                .with_metrics(&mut registry, lp_gs::MetricsConfig::default())
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let LpSwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    swarm
        .behaviour_mut()
        .subscribe(&lp_gs::IdentTopic::new(TOPIC))
        .expect("subscribe");
    let (commands, mut rx) = mpsc::unbounded_channel::<LpCommand>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(f) => f(&mut swarm),
                    None => break,
                },
                ev = swarm.select_next_some() => {
                    if let LpSwarmEvent::Behaviour(lp_gs::Event::Message { message, .. }) = ev {
                        if let Some(n) = number_of(&message.data) {
                            let _ = receipts.send((index, n, Instant::now()));
                        }
                    }
                }
            }
        }
    });
    LpNode {
        commands,
        addr,
        registry,
    }
}

async fn run_libp2p(n: usize, dials: usize, messages: usize) -> Outcome {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(libp2p_node(i, tx.clone()).await);
    }
    for (i, out) in graph(n, dials).into_iter().enumerate() {
        for j in out {
            let addr = nodes[j].addr.clone();
            nodes[i]
                .call(move |s| s.dial(addr).expect("libp2p dial"))
                .await;
        }
    }
    tokio::time::sleep(SETTLE).await;
    let mut published = Vec::new();
    let topic = lp_gs::IdentTopic::new(TOPIC);
    for k in 0..messages {
        let from = (k * 37) % n;
        let data = payload(k as u64);
        let at = Instant::now();
        let mut ok = false;
        for _ in 0..100 {
            let (d, t) = (data.clone(), topic.clone());
            if nodes[from]
                .call(move |s| s.behaviour_mut().publish(t, d).is_ok())
                .await
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "rust-libp2p node {from} could not publish");
        published.push((from, at));
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
    tokio::time::sleep(DRAIN).await;
    let mut duplicates = 0u64;
    let mut idontwant = 0u64;
    let mut mesh = 0usize;
    for node in &nodes {
        let all = node.counter("topic_msg_recv_counts_unfiltered");
        let firsts = node.counter("topic_msg_recv_counts");
        duplicates += all.saturating_sub(firsts);
        idontwant += node.counter("idontwant_msgs_ids");
        let hash = topic.hash();
        mesh += node
            .call(move |s| s.behaviour().mesh_peers(&hash).count())
            .await;
    }
    Outcome::collect(n, published, rx, (duplicates, idontwant), mesh)
}

// ---------------------------------------------------------------------------------------------
// Measuring

struct Outcome {
    expected: u64,
    delivered: u64,
    duplicates: u64,
    /// Message ids received in IDONTWANT, summed over the nodes.
    idontwant: u64,
    latencies_us: Vec<u64>,
    mesh_avg: f64,
    /// Mesh peers each node chokes at the end, on average (meshwire with choking).
    choked_avg: f64,
    /// IWANTs sent for ids only choked peers announced, summed over the nodes.
    fallback_iwants: u64,
}

impl Outcome {
    fn collect(
        n: usize,
        published: Vec<(usize, Instant)>,
        mut rx: mpsc::UnboundedReceiver<Receipt>,
        (duplicates, idontwant): (u64, u64),
        mesh: usize,
    ) -> Outcome {
        let mut seen: HashMap<(usize, u64), Instant> = HashMap::new();
        while let Ok((node, number, at)) = rx.try_recv() {
            seen.entry((node, number)).or_insert(at);
        }
        let mut latencies_us = Vec::new();
        for (&(node, number), at) in &seen {
            let Some((from, sent)) = published.get(number as usize) else {
                continue;
            };
            if *from != node {
                latencies_us.push(at.saturating_duration_since(*sent).as_micros() as u64);
            }
        }
        latencies_us.sort_unstable();
        Outcome {
            expected: (published.len() * (n - 1)) as u64,
            delivered: latencies_us.len() as u64,
            duplicates,
            idontwant,
            latencies_us,
            mesh_avg: mesh as f64 / n as f64,
            choked_avg: 0.0,
            fallback_iwants: 0,
        }
    }

    fn percentile(&self, q: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        self.latencies_us[i]
    }
}

fn child(implementation: &str) {
    let n = env_usize("MESHWIRE_BENCH_NODES", 100);
    let dials = env_usize("MESHWIRE_BENCH_DIALS", 6);
    let messages = env_usize("MESHWIRE_BENCH_MESSAGES", 100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = rss();
    let cpu_before = cpu_ms();
    let outcome = runtime.block_on(async {
        match implementation {
            "meshwire" => run_meshwire(n, dials, messages).await,
            _ => run_libp2p(n, dials, messages).await,
        }
    });
    let after = rss();
    let cpu = cpu_ms() - cpu_before;
    println!(
        "RESULT {implementation} expected={} delivered={} duplicates={} idontwant={} p50_us={} \
         p99_us={} max_us={} memory_per_node={} cpu_ms={} mesh_avg={:.2} choked_avg={:.2} \
         fallback_iwants={}",
        outcome.expected,
        outcome.delivered,
        outcome.duplicates,
        outcome.idontwant,
        outcome.percentile(0.50),
        outcome.percentile(0.99),
        outcome.latencies_us.last().copied().unwrap_or(0),
        after.saturating_sub(before) / n as u64,
        cpu,
        outcome.mesh_avg,
        outcome.choked_avg,
        outcome.fallback_iwants,
    );
    // The nodes are not shut down one by one: the process ends.
    std::process::exit(0);
}

/// One child's figures.
#[derive(Debug, Default)]
struct Figures {
    values: HashMap<String, f64>,
}

impl Figures {
    fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(0.0)
    }

    fn delivery(&self) -> f64 {
        let expected = self.get("expected");
        if expected == 0.0 {
            0.0
        } else {
            self.get("delivered") / expected
        }
    }

    /// `key` per delivered message.
    fn per_delivery(&self, key: &str) -> f64 {
        let delivered = self.get("delivered");
        if delivered == 0.0 {
            0.0
        } else {
            self.get(key) / delivered
        }
    }
}

/// One configuration: its name, message size, IDONTWANT setting (`MESHWIRE_BENCH_IDONTWANT`)
/// and whether meshwire also runs with choking.
struct Row {
    name: &'static str,
    size: usize,
    idontwant: &'static str,
    choke: bool,
}

const ROWS: [Row; 4] = [
    Row {
        name: "small",
        size: 256,
        idontwant: "on",
        choke: false,
    },
    Row {
        name: "large",
        size: 2048,
        idontwant: "on",
        choke: false,
    },
    Row {
        name: "large-off",
        size: 2048,
        idontwant: "off",
        choke: false,
    },
    Row {
        name: "choke",
        size: 256,
        idontwant: "on",
        choke: true,
    },
];

fn run_child(implementation: &str, row: &Row) -> Figures {
    run_child_choking(implementation, row, false)
}

fn run_child_choking(implementation: &str, row: &Row, choke: bool) -> Figures {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args(["--child", implementation])
        .env("MESHWIRE_BENCH_SIZE", row.size.to_string())
        .env("MESHWIRE_BENCH_IDONTWANT", row.idontwant)
        .env("MESHWIRE_BENCH_CHOKE", if choke { "on" } else { "off" })
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut figures = Figures::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        if let Some(rest) = line.strip_prefix("RESULT ") {
            for kv in rest.split_whitespace().skip(1) {
                if let Some((k, v)) = kv.split_once('=') {
                    if let Ok(v) = v.parse::<f64>() {
                        figures.values.insert(k.to_string(), v);
                    }
                }
            }
        } else {
            println!("  [{implementation}] {line}");
        }
    }
    let status = child.wait().expect("child exit");
    assert!(status.success(), "{implementation} child failed: {status}");
    figures
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args.get(i + 1).map_or("meshwire", String::as_str));
        return;
    }
    let n = env_usize("MESHWIRE_BENCH_NODES", 100);
    let wanted = std::env::var("MESHWIRE_BENCH_ROWS").unwrap_or_default();
    for row in ROWS
        .iter()
        .filter(|r| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == r.name))
    {
        run_row(n, row);
    }
}

fn run_row(n: usize, row: &Row) {
    println!(
        "gossipsub {}: {n} nodes per implementation on loopback QUIC (one endpoint per node, \
         each implementation's nodes alone in a child process), {} dials per node, {} messages \
         of {} B every {} ms, D={D} D_lo={D_LO} D_hi={D_HI}, heartbeat {} ms, IDONTWANT {}",
        row.name,
        env_usize("MESHWIRE_BENCH_DIALS", 6),
        env_usize("MESHWIRE_BENCH_MESSAGES", 100),
        row.size,
        PUBLISH_EVERY.as_millis(),
        HEARTBEAT.as_millis(),
        row.idontwant,
    );
    let rounds = env_usize("MESHWIRE_BENCH_ROUNDS", 0);
    if row.choke && rounds > 0 {
        run_rounds(row, rounds);
        return;
    }
    let mut all = Vec::new();
    for implementation in ["meshwire", "rust-libp2p"] {
        let f = run_child(implementation, row);
        print_child(row, implementation, &f);
        all.push(f);
    }
    let (mw, lp) = (&all[0], &all[1]);
    print_pair(row, mw, lp);
    if !row.choke {
        return;
    }
    let ch = run_child_choking("meshwire", row, true);
    print_choke(row, &ch, lp, mw);
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// `gossipsub <row> <implementation> delivery ...`: one child's summary line.
fn print_child(row: &Row, implementation: &str, f: &Figures) {
    println!(
        "gossipsub {} {implementation} delivery {:.2} % duplicates {:.2} idontwant {:.2} \
         p50 {:.2} ms p99 {:.2} ms max {:.2} ms memory/node {:.1} KiB cpu {:.1} s mesh {:.2}",
        row.name,
        f.delivery() * 100.0,
        f.per_delivery("duplicates"),
        f.per_delivery("idontwant"),
        f.get("p50_us") / 1000.0,
        f.get("p99_us") / 1000.0,
        f.get("max_us") / 1000.0,
        f.get("memory_per_node") / 1024.0,
        f.get("cpu_ms") / 1000.0,
        f.get("mesh_avg"),
    );
}

/// `gossipsub <row> meshwire / rust-libp2p: ...`: the ratios of a meshwire child to a
/// rust-libp2p one.
fn print_pair(row: &Row, mw: &Figures, lp: &Figures) {
    println!(
        "gossipsub {} meshwire / rust-libp2p: delivery {:.3}x duplicates {:.2}x p50 {:.2}x \
         p99 {:.2}x memory/node {:.2}x cpu {:.2}x",
        row.name,
        ratio(mw.delivery(), lp.delivery()),
        ratio(mw.per_delivery("duplicates"), lp.per_delivery("duplicates")),
        ratio(mw.get("p50_us"), lp.get("p50_us")),
        ratio(mw.get("p99_us"), lp.get("p99_us")),
        ratio(mw.get("memory_per_node"), lp.get("memory_per_node")),
        ratio(mw.get("cpu_ms"), lp.get("cpu_ms")),
    );
}

/// `gossipsub <row> meshwire+choke ...` and its ratios to rust-libp2p (`lp`) and to meshwire
/// without choking (`mw`).
fn print_choke(row: &Row, ch: &Figures, lp: &Figures, mw: &Figures) {
    println!(
        "gossipsub {} meshwire+choke delivery {:.2} % duplicates {:.2} p50 {:.2} ms p99 {:.2} ms \
         max {:.2} ms memory/node {:.1} KiB cpu {:.1} s mesh {:.2} choked {:.2} fallback-iwants \
         {:.3}",
        row.name,
        ch.delivery() * 100.0,
        ch.per_delivery("duplicates"),
        ch.get("p50_us") / 1000.0,
        ch.get("p99_us") / 1000.0,
        ch.get("max_us") / 1000.0,
        ch.get("memory_per_node") / 1024.0,
        ch.get("cpu_ms") / 1000.0,
        ch.get("mesh_avg"),
        ch.get("choked_avg"),
        ch.per_delivery("fallback_iwants"),
    );
    for (name, base) in [("rust-libp2p", lp), ("meshwire", mw)] {
        println!(
            "gossipsub {} meshwire+choke / {name}: delivery {:.3}x duplicates {:.2}x p50 {:.2}x \
             p99 {:.2}x cpu {:.2}x",
            row.name,
            ratio(ch.delivery(), base.delivery()),
            ratio(
                ch.per_delivery("duplicates"),
                base.per_delivery("duplicates")
            ),
            ratio(ch.get("p50_us"), base.get("p50_us")),
            ratio(ch.get("p99_us"), base.get("p99_us")),
            ratio(ch.get("cpu_ms"), base.get("cpu_ms")),
        );
    }
}

/// The children of a round, in the first round's order: meshwire with choking, rust-libp2p,
/// meshwire without choking.
const ROUND_CHILDREN: [(&str, &str, bool); 3] = [
    ("meshwire+choke", "meshwire", true),
    ("rust-libp2p", "rust-libp2p", false),
    ("meshwire", "meshwire", false),
];

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// The 1-minute load average, as `/proc/loadavg` says.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// `MESHWIRE_BENCH_ROUNDS=N` on the `choke` row: `N` rounds of the three children
/// (meshwire+choke, rust-libp2p, meshwire), the order rotated by one each round so no
/// variant always runs first or last, each child's lines as without rounds; then per round
/// the ratios to rust-libp2p of the same round, and the medians over the rounds, so that one
/// child meeting more load cannot decide the comparison.
fn run_rounds(row: &Row, rounds: usize) {
    // ratios[variant] = per round (p50 ratio, p99 ratio) against rust-libp2p.
    let mut ratios: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    let mut duplicates: Vec<f64> = Vec::new();
    for round in 0..rounds {
        let mut figures: Vec<Option<Figures>> = vec![None, None, None];
        let load_start = load_average();
        for k in 0..ROUND_CHILDREN.len() {
            let slot = (k + round) % ROUND_CHILDREN.len();
            let (_, implementation, choke) = ROUND_CHILDREN[slot];
            figures[slot] = Some(run_child_choking(implementation, row, choke));
        }
        let [Some(ch), Some(lp), Some(mw)] = &figures[..] else {
            unreachable!("every child of the round ran");
        };
        print_child(row, "meshwire", mw);
        print_child(row, "rust-libp2p", lp);
        print_pair(row, mw, lp);
        print_choke(row, ch, lp, mw);
        let r = |f: &Figures, key: &str| ratio(f.get(key), lp.get(key));
        ratios[0].push((r(ch, "p50_us"), r(ch, "p99_us")));
        ratios[1].push((r(mw, "p50_us"), r(mw, "p99_us")));
        duplicates.push(ch.per_delivery("duplicates"));
        println!(
            "gossipsub {} round {}/{rounds} (load {load_start} -> {}; order {}): p50/p99 ms \
             meshwire+choke {:.2}/{:.2} rust-libp2p {:.2}/{:.2} meshwire {:.2}/{:.2}; \
             meshwire+choke / rust-libp2p p50 {:.2}x p99 {:.2}x; meshwire / rust-libp2p p50 \
             {:.2}x p99 {:.2}x",
            row.name,
            round + 1,
            load_average(),
            (0..ROUND_CHILDREN.len())
                .map(|k| ROUND_CHILDREN[(k + round) % ROUND_CHILDREN.len()].0)
                .collect::<Vec<_>>()
                .join(","),
            ch.get("p50_us") / 1000.0,
            ch.get("p99_us") / 1000.0,
            lp.get("p50_us") / 1000.0,
            lp.get("p99_us") / 1000.0,
            mw.get("p50_us") / 1000.0,
            mw.get("p99_us") / 1000.0,
            ratios[0][round].0,
            ratios[0][round].1,
            ratios[1][round].0,
            ratios[1][round].1,
        );
    }
    for (i, name) in ["meshwire+choke", "meshwire"].iter().enumerate() {
        let p50: Vec<f64> = ratios[i].iter().map(|r| r.0).collect();
        let p99: Vec<f64> = ratios[i].iter().map(|r| r.1).collect();
        let at_most = p99.iter().filter(|&&x| x <= 1.0).count();
        println!(
            "gossipsub {} rounds {rounds} median {name} / rust-libp2p: p50 {:.2}x p99 {:.2}x \
             (p99 <= 1.00x in {at_most} of {rounds} rounds; p99 per round {})",
            row.name,
            median(&p50),
            median(&p99),
            p99.iter()
                .map(|x| format!("{x:.2}x"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    println!(
        "gossipsub {} rounds {rounds} meshwire+choke duplicates median {:.2}",
        row.name,
        median(&duplicates)
    );
}
