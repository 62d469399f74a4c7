//! The harness of the hostile-peer tests: the victim process, the honest peer, attackers
//! and the figures each test prints.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use hostile_tests::Status;
use meshwire::core::ConnectionId;
use meshwire::core::{Keypair, PeerId};
use meshwire::swarm::toolkit::Outbox;
use meshwire::swarm::{
    FromSwarm, NetworkBehaviour, OpenStream, OutboundStreamResult, Stream, StreamProtocol, Swarm,
    SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
use meshwire::transport::Connection;
use meshwire::transport::Multiaddr;
use meshwire::{kad, ping};

/// The attacks run one at a time, whatever the test harness's thread count: each measures
/// the victim's and the honest peer's time on a 2-core machine.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The victim process; killed when dropped.
pub struct Victim {
    child: Child,
    /// The victim's identity.
    pub peer: PeerId,
    /// Its listen address (without `/p2p/`).
    pub addr: Multiaddr,
    statuses: Arc<Mutex<Vec<Status>>>,
}

impl Victim {
    pub fn start(args: &[&str]) -> Victim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_victim"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("victim starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let s = statuses.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("listening ") {
                    let _ = tx.send(rest.to_string());
                } else if let Some(status) = Status::parse(&line) {
                    s.lock().unwrap().push(status);
                }
            }
        });
        let full: Multiaddr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("victim listens")
            .parse()
            .unwrap();
        let (addr, peer) = meshwire::transport::split_peer_id(&full, None).unwrap();
        Victim {
            child,
            peer: peer.expect("address names the peer"),
            addr,
            statuses,
        }
    }

    /// Statuses printed so far.
    pub fn mark(&self) -> usize {
        self.statuses.lock().unwrap().len()
    }

    /// The latest status.
    pub fn latest(&self) -> Status {
        self.statuses
            .lock()
            .unwrap()
            .last()
            .copied()
            .unwrap_or_default()
    }

    /// The highest resident memory (KiB) printed since `mark`.
    pub fn peak_rss_since(&self, mark: usize) -> u64 {
        let s = self.statuses.lock().unwrap();
        s[mark.min(s.len())..]
            .iter()
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or(0)
    }

    /// CPU ticks used between `mark` and now.
    pub fn cpu_since(&self, mark: usize) -> u64 {
        let s = self.statuses.lock().unwrap();
        let first = s.get(mark.saturating_sub(1)).map_or(0, |s| s.cpu_ticks);
        s.last().map_or(0, |l| l.cpu_ticks.saturating_sub(first))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(NetworkBehaviour)]
pub struct Honest {
    ping: ping::Behaviour,
    kad: kad::Behaviour,
}

/// What the honest peer saw.
#[derive(Default)]
pub struct Seen {
    pub rtts: Vec<Duration>,
    pub ping_failures: usize,
    pub lookups_ok: usize,
    pub lookups_failed: usize,
}

impl Seen {
    pub fn rtt_quantile(&self, q: f64) -> Duration {
        let mut r = self.rtts.clone();
        r.sort();
        r.get(((r.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(Duration::MAX)
    }
}

/// An honest peer on its own thread and runtime (so the attackers' tasks in this process do
/// not delay it): pings the victim every 100 ms and looks up a random key through it every
/// 500 ms, until the returned sender is dropped.
pub fn honest_peer(victim: &Victim) -> (Arc<Mutex<Seen>>, tokio::sync::oneshot::Sender<()>) {
    let key = Keypair::generate();
    let local = key.peer_id();
    let node = Honest {
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(100))),
        kad: kad::Behaviour::new(local, kad::Config::default()),
    };
    let transport = QuicTransport::new(key, QuicConfig::default()).unwrap();
    let mut swarm = Swarm::new(transport, node, SwarmConfig::default());
    swarm
        .behaviour_mut()
        .kad
        .add_address(victim.peer, victim.addr.clone());
    swarm
        .dial(meshwire::transport::with_peer_id(&victim.addr, victim.peer))
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let victim_peer = victim.peer;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let run = async move {
        let mut lookup = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = lookup.tick() => {
                    let key: Vec<u8> = (0..32).map(|_| rand_byte()).collect();
                    swarm.behaviour_mut().kad.find_node(key);
                }
                ev = swarm.next_event() => match ev {
                    SwarmEvent::Behaviour(HonestEvent::Ping(ping::Event { peer, result, .. })) if peer == victim_peer => {
                        let mut s = s.lock().unwrap();
                        match result {
                            Ok(rtt) => s.rtts.push(rtt),
                            Err(_) => s.ping_failures += 1,
                        }
                    }
                    SwarmEvent::Behaviour(HonestEvent::Kad(kad::Event::QueryFinished { result, stats, .. })) => {
                        let ok = matches!(result, kad::QueryResult::FindNode(Ok(_))) && stats.successes >= 1;
                        let mut s = s.lock().unwrap();
                        if ok { s.lookups_ok += 1 } else { s.lookups_failed += 1 }
                    }
                    _ => {}
                }
            }
        }
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run);
    });
    (seen, stop)
}

pub fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u8
}

/// What an attacker does with each stream it gets.
pub type Work = Arc<dyn Fn(Stream) -> BoxFuture<'static, ()> + Send + Sync>;

/// An attacker: on every connection it opens `streams` streams of `protocol` and runs `work`
/// on each; when `repeat` is set, a finished stream is replaced by a new one.
pub struct Attacker {
    protocol: StreamProtocol,
    streams: usize,
    repeat: bool,
    work: Work,
    outbox: Outbox<()>,
    done: futures::channel::mpsc::UnboundedReceiver<PeerId>,
    done_tx: futures::channel::mpsc::UnboundedSender<PeerId>,
}

impl NetworkBehaviour for Attacker {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionEstablished {
            peer, connection, ..
        } = event
        {
            for _ in 0..self.streams {
                let req = OpenStream::new(peer, self.protocol.clone()).on_connection(connection);
                let _ = self.outbox.push(ToSwarm::OpenStream(req));
            }
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        if let Ok(out) = result.result {
            let work = (self.work)(out.stream);
            let done = self.done_tx.clone();
            let peer = result.peer;
            tokio::spawn(async move {
                work.await;
                let _ = done.unbounded_send(peer);
            });
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        if let Poll::Ready(cmd) = self.outbox.poll(cx) {
            return Poll::Ready(cmd);
        }
        if let Poll::Ready(Some(peer)) = futures::StreamExt::poll_next_unpin(&mut self.done, cx) {
            if self.repeat {
                let req = OpenStream::new(peer, self.protocol.clone()).no_dial();
                return Poll::Ready(ToSwarm::OpenStream(req));
            }
        }
        Poll::Pending
    }
}

/// Starts `n` attackers against `victim`, each its own swarm and identity, with QUIC receive
/// windows of `window` bytes. Returns their tasks.
pub fn attackers(
    victim: &Victim,
    n: usize,
    window: u32,
    protocol: StreamProtocol,
    streams: usize,
    repeat: bool,
    work: Work,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let config = QuicConfig {
                receive_window: window,
                stream_receive_window: window,
                ..QuicConfig::default()
            };
            let transport = QuicTransport::new(Keypair::generate(), config).unwrap();
            let (done_tx, done) = futures::channel::mpsc::unbounded();
            let behaviour = Attacker {
                protocol: protocol.clone(),
                streams,
                repeat,
                work: work.clone(),
                outbox: Outbox::new(10_000),
                done,
                done_tx,
            };
            let mut swarm = Swarm::new(transport, behaviour, SwarmConfig::default());
            swarm
                .dial(meshwire::transport::with_peer_id(&victim.addr, victim.peer))
                .unwrap();
            tokio::spawn(async move {
                loop {
                    swarm.next_event().await;
                }
            })
        })
        .collect()
}

/// Runs the attack `name` for `duration` with an honest peer beside it, prints its figures
/// ([`report`]) and returns what the honest peer saw during the attack, the victim's peak
/// memory (KiB) meanwhile, and the victim's status before and after.
pub async fn under_attack(
    name: &str,
    victim: &Victim,
    duration: Duration,
    start: impl FnOnce() -> Vec<tokio::task::JoinHandle<()>>,
) -> (Seen, u64, Status, Status) {
    let (seen, stop_honest) = honest_peer(victim);
    // Let the honest peer connect and settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = victim.latest();
    seen.lock().unwrap().rtts.clear();
    let mark = victim.mark();
    let tasks = start();
    tokio::time::sleep(duration).await;
    let after = victim.latest();
    let peak = victim.peak_rss_since(mark);
    let cpu = victim.cpu_since(mark);
    for t in tasks {
        t.abort();
    }
    drop(stop_honest);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    report(name, &seen, peak, cpu, duration, &before, &after);
    (seen, peak, before, after)
}

pub fn report(
    name: &str,
    seen: &Seen,
    peak_kib: u64,
    cpu: u64,
    duration: Duration,
    before: &Status,
    after: &Status,
) {
    println!(
        "{name}: victim peak RSS {:.1} MiB (before {:.1} MiB), CPU {:.0}% of one core; honest ping p50 {:?} p90 {:?} max {:?} ({} pings, {} failed), lookups {} ok / {} failed; conns {} -> {}, streams {} -> {}, refused {} -> {}, trimmed {} -> {} (flood rule {} -> {}), incoming errors {} -> {}, echo timeouts {} -> {}, stream errors {} -> {}, kad inbound failures {} -> {}, identify errors {} -> {}, most addresses kept for a peer {}, pushes delayed {} -> {}",
        peak_kib as f64 / 1024.0,
        before.rss_kib as f64 / 1024.0,
        cpu as f64 / duration.as_secs_f64(), // 100 ticks per second = 100%
        seen.rtt_quantile(0.5),
        seen.rtt_quantile(0.9),
        seen.rtt_quantile(1.0),
        seen.rtts.len(),
        seen.ping_failures,
        seen.lookups_ok,
        seen.lookups_failed,
        before.conns,
        after.conns,
        before.streams,
        after.streams,
        before.refused,
        after.refused,
        before.trimmed,
        after.trimmed,
        before.flood_trimmed,
        after.flood_trimmed,
        before.incoming_errors,
        after.incoming_errors,
        before.echo_timeouts,
        after.echo_timeouts,
        before.inbound_stream_errors,
        after.inbound_stream_errors,
        before.kad_inbound_failures,
        after.kad_inbound_failures,
        before.identify_errors,
        after.identify_errors,
        after.max_peer_addrs,
        before.pushes_delayed,
        after.pushes_delayed,
    );
}

/// What a raw attacker does with each connection it gets: raw streams, bytes of its choice.
pub type RawWork = Arc<dyn Fn(Connection) -> BoxFuture<'static, ()> + Send + Sync>;

/// An attacker that works on its connections directly (raw streams, hand-made
/// multistream-select and frames), inside its swarm's task so that aborting the task ends
/// it all. It keeps its connections alive.
struct RawAttacker {
    work: RawWork,
    running: FuturesUnordered<BoxFuture<'static, ()>>,
}

impl NetworkBehaviour for RawAttacker {
    type Event = ();

    fn protocols(&self) -> Vec<StreamProtocol> {
        Vec::new()
    }

    fn connection_keep_alive(&self, _peer: PeerId, _connection: ConnectionId) -> bool {
        true
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionEstablished { handle, .. } = event {
            self.running.push((self.work)(handle.clone()));
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<()>> {
        while let Poll::Ready(Some(())) = futures::StreamExt::poll_next_unpin(&mut self.running, cx)
        {
        }
        Poll::Pending
    }
}

/// `n` raw attackers, each its own swarm and identity, that will run `work` on their
/// connection; built ahead of an attack so that the attack's window measures the victim,
/// not the making of identities. Start them with [`launch`].
pub fn raw_attackers(n: usize, work: RawWork) -> Vec<Swarm<impl NetworkBehaviour<Event = ()>>> {
    (0..n)
        .map(|_| {
            let transport = QuicTransport::new(Keypair::generate(), QuicConfig::default()).unwrap();
            let behaviour = RawAttacker {
                work: work.clone(),
                running: FuturesUnordered::new(),
            };
            Swarm::new(transport, behaviour, SwarmConfig::default())
        })
        .collect()
}

/// Dials `victim` from each of `swarms`, `spacing` apart, and runs them. Returns their
/// tasks (and the task dialing them).
pub fn launch<B: NetworkBehaviour + Send + 'static>(
    victim: &Victim,
    swarms: Vec<Swarm<B>>,
    spacing: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let addr = meshwire::transport::with_peer_id(&victim.addr, victim.peer);
    let tasks = Arc::new(Mutex::new(Vec::new()));
    let t = tasks.clone();
    let dialer = tokio::spawn(async move {
        for mut swarm in swarms {
            swarm.dial(addr.clone()).unwrap();
            let task = tokio::spawn(async move {
                loop {
                    swarm.next_event().await;
                }
            });
            t.lock().unwrap().push(task);
            if !spacing.is_zero() {
                tokio::time::sleep(spacing).await;
            }
        }
    });
    // The dialer's handle aborts the dialing; the swarms' handles are collected as they
    // start, so return a task that aborts them all when aborted.
    let reaper = tokio::spawn(async move {
        struct AbortAll(Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>);
        impl Drop for AbortAll {
            fn drop(&mut self) {
                for t in self.0.lock().unwrap().drain(..) {
                    t.abort();
                }
            }
        }
        let _guard = AbortAll(tasks);
        futures::future::pending::<()>().await;
    });
    vec![dialer, reaper]
}

/// An unsigned varint.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// One multistream-select message: `msg` and a newline, length-prefixed.
pub fn ms(msg: &str) -> Vec<u8> {
    let mut out = varint(msg.len() as u64 + 1);
    out.extend_from_slice(msg.as_bytes());
    out.push(b'\n');
    out
}

/// The dialer's side of multistream-select for `protocol`, sent at once (header and
/// proposal), as a lazy dialer does.
pub fn propose(protocol: &str) -> Vec<u8> {
    let mut out = ms("/multistream/1.0.0");
    out.extend(ms(protocol));
    out
}
