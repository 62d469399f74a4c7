//! The harness of the hostile-peer tests: the victim process, the honest peer, attackers
//! and the figures each test prints.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hostile_tests::{AttackerStatus, Status};
use meshwire::core::{Keypair, PeerId};
use meshwire::swarm::toolkit::Outbox;
use meshwire::swarm::{
    FromSwarm, NetworkBehaviour, OpenStream, OutboundStreamResult, Stream, StreamProtocol, Swarm,
    SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
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

    /// The most streams held at once since `mark`.
    pub fn peak_streams_since(&self, mark: usize) -> u64 {
        let s = self.statuses.lock().unwrap();
        s[mark.min(s.len())..]
            .iter()
            .map(|s| s.streams)
            .max()
            .unwrap_or(0)
    }

    /// Waits up to `limit` for a status that satisfies `ok`; returns the first that does,
    /// or the latest.
    pub async fn wait_for(&self, limit: Duration, ok: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + limit;
        loop {
            let latest = self.latest();
            if ok(&latest) || Instant::now() >= deadline {
                return latest;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
/// 500 ms, until the returned sender is dropped; then it closes its connection (so the victim
/// holds nothing of it) and ends.
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
                _ = &mut stopped => break,
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
        // Leave cleanly, so that the victim holds nothing of ours once we are gone.
        if swarm.disconnect_peer_id(victim_peer) {
            let closed = async {
                while !matches!(
                    swarm.next_event().await,
                    SwarmEvent::ConnectionClosed { .. }
                ) {}
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
            // Let the close frame leave before the runtime goes.
            tokio::time::sleep(Duration::from_millis(50)).await;
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

/// What an attack's run measured.
pub struct Outcome {
    /// What the honest peer saw during the attack.
    pub seen: Seen,
    /// The victim's peak resident memory during the attack, KiB.
    pub peak_rss_kib: u64,
    /// The most streams the victim held at once during the attack.
    pub peak_streams: u64,
    /// The victim's status before the attack and at its end.
    pub before: Status,
    pub after: Status,
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
    let o = measure(name, victim, duration, start, |tasks| {
        for t in tasks {
            t.abort();
        }
    })
    .await;
    (o.seen, o.peak_rss_kib, o.before, o.after)
}

/// [`under_attack`] with the attack in its own process: `attacker`, started (and ready)
/// before, is told to go once the honest peer has settled. The attack goes on after this
/// returns, until [`AttackerProcess::stop`] or the attacker is dropped.
pub async fn under_process_attack(
    name: &str,
    victim: &Victim,
    duration: Duration,
    attacker: &mut AttackerProcess,
) -> Outcome {
    let outcome = measure(name, victim, duration, || attacker.go(), |()| ()).await;
    let a = attacker.latest();
    println!(
        "{name}: attacker connected {} (dials failed {}, closed by the victim {}), streams opened {}, open at the end {}",
        a.connected, a.dial_failures, a.closed, a.streams_opened, a.streams_open
    );
    outcome
}

async fn measure<T>(
    name: &str,
    victim: &Victim,
    duration: Duration,
    start: impl FnOnce() -> T,
    end: impl FnOnce(T),
) -> Outcome {
    let (seen, stop_honest) = honest_peer(victim);
    // Let the honest peer connect and settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = victim.latest();
    seen.lock().unwrap().rtts.clear();
    let mark = victim.mark();
    let attack = start();
    tokio::time::sleep(duration).await;
    let after = victim.latest();
    let peak_rss_kib = victim.peak_rss_since(mark);
    let peak_streams = victim.peak_streams_since(mark);
    let cpu = victim.cpu_since(mark);
    end(attack);
    drop(stop_honest);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    report(name, &seen, peak_rss_kib, cpu, duration, &before, &after);
    Outcome {
        seen,
        peak_rss_kib,
        peak_streams,
        before,
        after,
    }
}

/// The `attacker` binary running one attack against a victim; the attack ends (its
/// connections closed) when this is dropped.
pub struct AttackerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    statuses: Arc<Mutex<Vec<AttackerStatus>>>,
}

impl AttackerProcess {
    /// Starts `attacker <victim> <attack> <args>` and waits until it has made its
    /// identities (it prints `ready`).
    pub fn start(victim: &Victim, attack: &str, args: &[&str]) -> AttackerProcess {
        let target = meshwire::transport::with_peer_id(&victim.addr, victim.peer);
        let exe = env!("CARGO_BIN_EXE_attacker");
        // The attacker runs at the victim's priority, its looping attacks paced (on a free
        // core a debug attacker outruns a debug victim, and the figures would measure the
        // victim's share of two cores). `ATTACKER_NICE=<n>` runs it under `nice -n <n>`.
        let mut command = match std::env::var("ATTACKER_NICE") {
            Ok(nice) => {
                let mut c = Command::new("nice");
                c.args(["-n", &nice, exe]);
                c
            }
            Err(_) => Command::new(exe),
        };
        // `ATTACKER_RATE` replaces the pace of a looping attack (`--rate`; 0: as fast as
        // it goes), for measuring what an unpaced attack does.
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Ok(rate) = std::env::var("ATTACKER_RATE") {
            match args.iter().position(|a| a == "--rate") {
                Some(i) if i + 1 < args.len() => args[i + 1] = rate,
                _ => args.extend(["--rate".to_string(), rate]),
            }
        }
        let mut child = command
            .arg(target.to_string())
            .arg(attack)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("attacker starts");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let s = statuses.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(status) = AttackerStatus::parse(&line) {
                    s.lock().unwrap().push(status);
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(60))
            .expect("attacker ready");
        AttackerProcess {
            child,
            stdin,
            statuses,
        }
    }

    fn command(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("attacker running");
        writeln!(stdin, "{command}").expect("attacker listens");
        stdin.flush().expect("attacker listens");
    }

    /// Starts the attack.
    pub fn go(&mut self) {
        self.command("go");
    }

    /// Ends the attack's streams and dials; its connections stay.
    pub fn stop(&mut self) {
        self.command("stop");
    }

    /// The latest status.
    pub fn latest(&self) -> AttackerStatus {
        self.statuses
            .lock()
            .unwrap()
            .last()
            .copied()
            .unwrap_or_default()
    }

    /// The most streams the attacker held open at once so far.
    pub fn peak_streams_open(&self) -> u64 {
        let s = self.statuses.lock().unwrap();
        s.iter().map(|s| s.streams_open).max().unwrap_or(0)
    }
}

impl Drop for AttackerProcess {
    fn drop(&mut self) {
        // The end of its stdin closes its connections and ends it; kill it if it hangs.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
