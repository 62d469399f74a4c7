//! Hostile peers against a default node in its own process (the `victim` binary), on
//! loopback, in a short form of each attack: a few seconds, tens of attacker connections.
//! Each test checks, while an honest peer keeps pinging the victim and looking keys up
//! through it, that the victim's resident memory stays under a stated bound, that the honest
//! peer's pings and lookups keep succeeding within a stated time, and that the defence's own
//! counter moved. `cargo test -p hostile-tests -- --nocapture --test-threads 1` prints the
//! figures.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{AsyncWriteExt, FutureExt};
use hostile_tests::Status;
use meshwire::core::{Keypair, PeerId};
use meshwire::swarm::toolkit::Outbox;
use meshwire::swarm::{
    FromSwarm, NetworkBehaviour, OpenStream, OutboundStreamResult, Stream, StreamProtocol, Swarm,
    SwarmConfig, SwarmEvent, ToSwarm,
};
use meshwire::transport::quic::{QuicConfig, QuicTransport};
use meshwire::transport::Multiaddr;
use meshwire::{identify, kad, ping};

/// The attacks run one at a time, whatever the test harness's thread count: each measures
/// the victim's and the honest peer's time on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The victim process; killed when dropped.
struct Victim {
    child: Child,
    peer: PeerId,
    addr: Multiaddr,
    statuses: Arc<Mutex<Vec<Status>>>,
}

impl Victim {
    fn start(args: &[&str]) -> Victim {
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
    fn mark(&self) -> usize {
        self.statuses.lock().unwrap().len()
    }

    /// The latest status.
    fn latest(&self) -> Status {
        self.statuses
            .lock()
            .unwrap()
            .last()
            .copied()
            .unwrap_or_default()
    }

    /// The highest resident memory (KiB) printed since `mark`.
    fn peak_rss_since(&self, mark: usize) -> u64 {
        let s = self.statuses.lock().unwrap();
        s[mark.min(s.len())..]
            .iter()
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or(0)
    }

    /// CPU ticks used between `mark` and now.
    fn cpu_since(&self, mark: usize) -> u64 {
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
struct Honest {
    ping: ping::Behaviour,
    kad: kad::Behaviour,
}

/// What the honest peer saw.
#[derive(Default)]
struct Seen {
    rtts: Vec<Duration>,
    ping_failures: usize,
    lookups_ok: usize,
    lookups_failed: usize,
}

impl Seen {
    fn rtt_quantile(&self, q: f64) -> Duration {
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
fn honest_peer(victim: &Victim) -> (Arc<Mutex<Seen>>, tokio::sync::oneshot::Sender<()>) {
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
                    SwarmEvent::Behaviour(HonestEvent::Kad(kad::Event::Kad(kad::KadEvent::QueryFinished { result, stats, .. }))) => {
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

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() as u8
}

/// What an attacker does with each stream it gets.
type Work = Arc<dyn Fn(Stream) -> BoxFuture<'static, ()> + Send + Sync>;

/// An attacker: on every connection it opens `streams` streams of `protocol` and runs `work`
/// on each; when `repeat` is set, a finished stream is replaced by a new one.
struct Attacker {
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
fn attackers(
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

/// Runs an attack for `duration` with an honest peer beside it; returns what the honest peer
/// saw during the attack, and the victim's peak memory (KiB) and CPU ticks meanwhile.
async fn under_attack(
    victim: &Victim,
    duration: Duration,
    start: impl FnOnce() -> Vec<tokio::task::JoinHandle<()>>,
) -> (Seen, u64, u64, Status, Status) {
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
    (seen, peak, cpu, before, after)
}

fn report(
    name: &str,
    seen: &Seen,
    peak_kib: u64,
    cpu: u64,
    duration: Duration,
    before: &Status,
    after: &Status,
) {
    println!(
        "{name}: victim peak RSS {:.1} MiB (before {:.1} MiB), CPU {:.0}% of one core; honest ping p50 {:?} p90 {:?} max {:?} ({} pings, {} failed), lookups {} ok / {} failed; refused {} -> {}, echo timeouts {} -> {}, stream errors {} -> {}, kad inbound failures {} -> {}, most addresses kept for a peer {}, pushes delayed {} -> {}",
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
        before.refused,
        after.refused,
        before.echo_timeouts,
        after.echo_timeouts,
        before.inbound_stream_errors,
        after.inbound_stream_errors,
        before.kad_inbound_failures,
        after.kad_inbound_failures,
        after.max_peer_addrs,
        before.pushes_delayed,
        after.pushes_delayed,
    );
}

/// Attack 1: attackers open ping streams, never read (tiny receive windows, so our echoes
/// block) and send 10 MB each. The victim buffers at most its QUIC receive window per
/// connection (1.5 MiB), and resets each stream whose echo cannot be written in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_window_fill() {
    let _serial = SERIAL.lock().await;
    let victim = Victim::start(&["--echo-timeout-ms", "2000"]);
    let duration = Duration::from_secs(6);
    let work: Work = Arc::new(|mut s: Stream| {
        async move {
            s.set_keep_alive(true);
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..160 {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
        .boxed()
    });
    let (seen, peak, cpu, before, after) = under_attack(&victim, duration, || {
        attackers(&victim, 40, 2048, ping::PROTOCOL, 2, false, work)
    })
    .await;
    report(
        "receive-window fill (40 connections x 2 streams x 10 MB)",
        &seen,
        peak,
        cpu,
        duration,
        &before,
        &after,
    );
    assert!(peak < 100 * 1024, "victim RSS peaked at {peak} KiB");
    assert!(
        after.conns >= 30,
        "the attack connected ({} connections)",
        after.conns
    );
    assert!(
        after.echo_timeouts > before.echo_timeouts,
        "blocked echoes were reset"
    );
    assert!(seen.rtts.len() >= 20 && seen.rtt_quantile(0.9) < Duration::from_millis(250));
    assert!(seen.lookups_ok >= 5 && seen.lookups_failed == 0);
}

/// Attack 2: kademlia slowloris — streams announce a 16,000-byte request and trickle a byte
/// a second. The victim reads frames incrementally (nothing is allocated for what has not
/// arrived) and the resource manager caps a peer's streams on the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kad_slowloris() {
    let _serial = SERIAL.lock().await;
    let victim = Victim::start(&[]);
    let duration = Duration::from_secs(6);
    let work: Work = Arc::new(|mut s: Stream| {
        async move {
            // 16,000 as an unsigned varint.
            if s.write_all(&[0x80, 0x7d]).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if s.write_all(&[0]).await.is_err() || s.flush().await.is_err() {
                    return;
                }
            }
        }
        .boxed()
    });
    let (seen, peak, cpu, before, after) = under_attack(&victim, duration, || {
        attackers(&victim, 40, 1 << 20, kad::PROTOCOL, 40, false, work)
    })
    .await;
    report(
        "kad slowloris (40 connections x 40 streams)",
        &seen,
        peak,
        cpu,
        duration,
        &before,
        &after,
    );
    assert!(peak < 100 * 1024, "victim RSS peaked at {peak} KiB");
    assert!(
        after.streams >= 400,
        "the attack held streams ({})",
        after.streams
    );
    assert!(
        after.refused > before.refused,
        "the resource manager refused streams past the per-peer share"
    );
    assert!(seen.rtts.len() >= 20 && seen.rtt_quantile(0.9) < Duration::from_millis(250));
    assert!(seen.lookups_ok >= 5 && seen.lookups_failed == 0);
}

/// Attack 3: identify push storm — peers push messages of 10 frames with thousands of
/// distinct addresses, over and over. The victim keeps at most 64 addresses of a peer and
/// de-duplicates in linear time, so its CPU stays free for the honest peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_push_storm() {
    let _serial = SERIAL.lock().await;
    let victim = Victim::start(&[]);
    let duration = Duration::from_secs(6);
    // 16 pushes of 10 frames of 300 distinct addresses each (48,000 in all), made before
    // the attack so the attackers spend their time sending, not building messages.
    let mut n: u32 = 0;
    let pushes: Vec<Vec<u8>> = (0..16)
        .map(|_| {
            let mut frames = Vec::new();
            for _ in 0..10 {
                let mut msg = identify::protocol::wire::Identify::default();
                while msg.listen_addrs.len() < 300 {
                    n += 1;
                    let [_, x, y, z] = n.to_be_bytes();
                    let addr: Multiaddr = format!("/ip4/10.{x}.{y}.{z}/udp/4001/quic-v1")
                        .parse()
                        .unwrap();
                    msg.listen_addrs.push(addr.to_vec());
                }
                let max = identify::protocol::DEFAULT_MAX_MESSAGE_SIZE;
                frames.extend(identify::protocol::encode_frame(&msg, max).unwrap());
            }
            frames
        })
        .collect();
    let pushes = Arc::new(pushes);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let work: Work = Arc::new(move |mut s: Stream| {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pushes = pushes.clone();
        async move {
            let _ = s.write_all(&pushes[i % pushes.len()]).await;
            let _ = s.close().await;
        }
        .boxed()
    });
    let (seen, peak, cpu, before, after) = under_attack(&victim, duration, || {
        attackers(
            &victim,
            30,
            1 << 20,
            identify::PUSH_PROTOCOL_NAME,
            4,
            true,
            work,
        )
    })
    .await;
    report(
        "identify push storm (30 connections, 4 pushes at a time each)",
        &seen,
        peak,
        cpu,
        duration,
        &before,
        &after,
    );
    assert!(
        after.max_peer_addrs > 0 && after.max_peer_addrs <= 64,
        "addresses kept per peer: {}",
        after.max_peer_addrs
    );
    assert!(
        after.pushes_delayed > before.pushes_delayed,
        "pushes past one per second per connection waited"
    );
    assert!(peak < 100 * 1024, "victim RSS peaked at {peak} KiB");
    assert!(seen.rtts.len() >= 20 && seen.rtt_quantile(0.9) < Duration::from_millis(100));
    assert!(seen.lookups_ok >= 5 && seen.lookups_failed == 0);
}
