//! SWIM over real QUIC on loopback: ten swarms form a cluster through a seed, a killed node is
//! reported failed by every other within a bound computed from the configuration, a graceful
//! leave is reported as left (never as failed), and connections of live members survive the
//! swarm's idle rule and QUIC's idle timeout.
//!
//! Run with output: `cargo test -p meshwire-swim --test swarm -- --nocapture`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use meshwire_core::{Keypair, PeerId};
use meshwire_swarm::{ConnectionCloseCause, Multiaddr, Swarm, SwarmConfig, SwarmEvent};
use meshwire_swim::{Behaviour, Config, Event, Member, Realm};
use meshwire_transport::quic::{QuicConfig, QuicTransport};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const N: usize = 10;

fn realm() -> Realm {
    "org.example.mesh".parse().unwrap()
}

/// A fast configuration: 200 ms protocol period, 50 ms dissemination rounds.
fn config() -> Config {
    let mut c = Config::default().with_rejoin_interval(Some(Duration::from_millis(500)));
    c.swim.probe_interval = Duration::from_millis(200);
    c.swim.probe_timeout = Duration::from_millis(100);
    c.swim.gossip_interval = Some(Duration::from_millis(50));
    // Anti-entropy well within the maximum suspicion timeout (4.8 s here), so a member that
    // missed a leave's gossip (dissemination is probabilistic) learns it from a push-pull
    // before its own suspicion of the departed node could run out.
    c.swim.push_pull_interval = Some(Duration::from_secs(2));
    c
}

/// QUIC with short idle timeout and keep-alive, so that a steady phase of a few seconds spans
/// several QUIC idle timeouts.
fn quic() -> QuicConfig {
    QuicConfig {
        max_idle_timeout: Duration::from_secs(3),
        keep_alive_interval: Duration::from_secs(1),
        ..QuicConfig::default()
    }
}

/// The swarm closes connections idle for 500 ms unless a behaviour keeps them alive.
fn swarm_config() -> SwarmConfig {
    SwarmConfig {
        idle_connection_timeout: Some(Duration::from_millis(500)),
        ..SwarmConfig::default()
    }
}

/// The time within which every live member declares a crashed one failed, from the protocol
/// configuration, for a group of `members` other members per node (the crashed one included):
///
/// - until some member probes it: a member probes each other member once per round of
///   `members` periods in shuffled order, so at most two rounds pass between two probes of it;
/// - the failed probe's own period;
/// - the suspicion reaches every member (gossip rounds carry fresh news to `gossip_nodes`
///   members each; allow 5 rounds), and each one's suspicion timer runs at most the maximum
///   suspicion timeout (no confirmation at all);
/// - the declaration spreads (5 more gossip rounds) — or each member's own timer fires.
fn failure_bound(c: &meshwire_swim::SwimConfig, members: usize) -> Duration {
    let first_probe = c.probe_interval * (2 * members as u32);
    let probe = c.probe_interval;
    let min = c.suspicion_min_timeout(members + 1);
    let max = min * c.suspicion_max_timeout_mult;
    let spread = c.gossip_interval.unwrap_or(c.probe_interval) * 5;
    first_probe + probe + spread + max + spread
}

enum Cmd {
    Join(Vec<(PeerId, Multiaddr)>),
    Leave,
    Members(oneshot::Sender<Vec<Member>>),
    Connected(oneshot::Sender<usize>),
    Io(oneshot::Sender<meshwire_swim::behaviour::IoStats>),
    Stats(oneshot::Sender<meshwire_swim::Stats>),
}

#[derive(Debug)]
enum Report {
    Swim(Event),
    /// A connection closed and none is left to that peer.
    Disconnected {
        peer: PeerId,
        cause: ConnectionCloseCause,
    },
}

struct Node {
    peer: PeerId,
    addr: Multiaddr,
    cmd: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

async fn spawn_node(
    index: usize,
    key: Keypair,
    listen: Multiaddr,
    reports: mpsc::UnboundedSender<(usize, Instant, Report)>,
) -> Node {
    let peer = key.peer_id();
    let behaviour = Behaviour::new(&key, [realm()], config()).unwrap();
    let transport = QuicTransport::new(key, quic()).unwrap();
    let mut swarm = Swarm::new(transport, behaviour, swarm_config());
    swarm.listen_on(listen).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_event().await {
            break address;
        }
    };
    let (cmd, mut cmds) = mpsc::unbounded_channel();
    let span = tracing::info_span!("node", i = index);
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            loop {
                tokio::select! {
                    ev = swarm.next_event() => {
                        let report = match ev {
                            SwarmEvent::Behaviour(e) => Report::Swim(e),
                            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. } => {
                                Report::Disconnected { peer: peer_id, cause }
                            }
                            _ => continue,
                        };
                        let _ = reports.send((index, Instant::now(), report));
                    }
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::Join(seeds)) => swarm.behaviour_mut().join(&realm(), &seeds).unwrap(),
                        Some(Cmd::Leave) => swarm.behaviour_mut().leave(),
                        Some(Cmd::Members(tx)) => {
                            let _ = tx.send(swarm.behaviour().live_members(&realm()));
                        }
                        Some(Cmd::Connected(tx)) => {
                            let _ = tx.send(swarm.connected_peers().count());
                        }
                        Some(Cmd::Io(tx)) => {
                            let _ = tx.send(swarm.behaviour().io_stats().clone());
                        }
                        Some(Cmd::Stats(tx)) => {
                            let _ = tx.send(swarm.behaviour().stats(&realm()).unwrap());
                        }
                        None => return,
                    },
                }
            }
        },
        span,
    ));
    Node {
        peer,
        addr,
        cmd,
        task,
    }
}

async fn live_members(node: &Node) -> Vec<PeerId> {
    let (tx, rx) = oneshot::channel();
    node.cmd.send(Cmd::Members(tx)).unwrap();
    rx.await.unwrap().into_iter().map(|m| m.peer).collect()
}

async fn stats(node: &Node) -> meshwire_swim::Stats {
    let (tx, rx) = oneshot::channel();
    node.cmd.send(Cmd::Stats(tx)).unwrap();
    rx.await.unwrap()
}

/// Suspicions raised by the nodes' own probes and failures they declared themselves, summed.
async fn raised(nodes: &[Node]) -> (u64, u64) {
    let (mut s, mut f) = (0, 0);
    for n in nodes {
        let st = stats(n).await;
        s += st.suspicions_raised;
        f += st.failures_declared;
    }
    (s, f)
}

async fn connected(node: &Node) -> usize {
    let (tx, rx) = oneshot::channel();
    node.cmd.send(Cmd::Connected(tx)).unwrap();
    rx.await.unwrap()
}

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_swarms_detect_a_crash_and_a_graceful_leave() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cfg = config();
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for i in 0..N {
        nodes.push(spawn_node(i, Keypair::generate(), loopback(), tx.clone()).await);
    }
    let peers: Vec<PeerId> = nodes.iter().map(|n| n.peer).collect();
    let index_of: HashMap<PeerId, usize> = peers.iter().enumerate().map(|(i, p)| (*p, i)).collect();

    // --- Join: everyone through node 0. --------------------------------------------------
    let start = Instant::now();
    let seed = (nodes[0].peer, nodes[0].addr.clone());
    for n in &nodes[1..] {
        n.cmd.send(Cmd::Join(vec![seed.clone()])).unwrap();
    }
    // Formation is a burst of 90 handshakes on two cores (in a debug build each costs tens
    // of milliseconds of CPU), so early probes may time out: suspicions, and even a short-lived
    // failure declaration refuted right after, are possible here; they are counted, not
    // forbidden. The steady phase below allows none.
    let (mut formation_suspicions, mut formation_failures) = (0, 0);
    let deadline = start + Duration::from_secs(30);
    loop {
        let mut all = true;
        for n in &nodes {
            all &= live_members(n).await.len() == N - 1;
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not form within 30 s"
        );
        let tick = Instant::now() + Duration::from_millis(50);
        while let Ok(Some((_, _, r))) = tokio::time::timeout_at(tick, reports.recv()).await {
            match r {
                Report::Swim(Event::MemberSuspected { .. }) => formation_suspicions += 1,
                Report::Swim(Event::MemberFailed { .. }) => formation_failures += 1,
                _ => {}
            }
        }
    }
    let formed = start.elapsed();
    let (own_suspicions, own_failures) = raised(&nodes).await;
    println!(
        "swarm: {N} swarms joined through one seed; every node sees {} live members after {formed:.2?} ({:.1} protocol periods); \
         during formation {own_suspicions} suspicions raised by failed probes ({formation_suspicions} suspicion events over all nodes), \
         {own_failures} failure declarations ({formation_failures} events over all nodes)",
        N - 1,
        formed.as_secs_f64() / cfg.swim.probe_interval.as_secs_f64()
    );
    // Let the last refutations and duplicate connections settle: wait for quiescence, no
    // suspicion or failure declaration for 10 protocol periods (at most 20 s).
    let quiet_for = cfg.swim.probe_interval * 10;
    let settle_start = Instant::now();
    let settle_deadline = settle_start + Duration::from_secs(20);
    let mut quiet_since = Instant::now();
    let (mut settle_suspicions, mut settle_failures) = (0, 0);
    while Instant::now() < quiet_since + quiet_for {
        assert!(
            Instant::now() < settle_deadline,
            "no quiescence within 20 s: {settle_suspicions} suspicions, {settle_failures} failures"
        );
        let until = (quiet_since + quiet_for).min(settle_deadline);
        if let Ok(Some((_, _, r))) = tokio::time::timeout_at(until, reports.recv()).await {
            match r {
                Report::Swim(Event::MemberSuspected { .. }) => {
                    settle_suspicions += 1;
                    quiet_since = Instant::now();
                }
                Report::Swim(Event::MemberFailed { .. }) => {
                    settle_failures += 1;
                    quiet_since = Instant::now();
                }
                _ => {}
            }
        }
    }
    let (s2, f2) = raised(&nodes).await;
    println!(
        "swarm: quiet ({quiet_for:.1?} without suspicion) {:.2?} after formation; meanwhile {} suspicions raised ({settle_suspicions} events), \
         {} failure declarations ({settle_failures} events)",
        settle_start.elapsed(),
        s2 - own_suspicions,
        f2 - own_failures,
    );
    let mut failed_events: Vec<(usize, PeerId)> = Vec::new();

    // --- Steady phase: longer than two QUIC idle timeouts and many swarm idle timeouts. ----
    let steady = quic().max_idle_timeout * 2 + Duration::from_secs(1);
    let until = Instant::now() + steady;
    let mut suspicions = 0;
    let mut disconnects = Vec::new();
    while let Ok(Some((i, _, r))) = tokio::time::timeout_at(until, reports.recv()).await {
        match r {
            Report::Swim(Event::MemberFailed { peer, .. }) => failed_events.push((i, peer)),
            Report::Swim(Event::MemberSuspected { .. }) => suspicions += 1,
            Report::Disconnected { peer, cause } => disconnects.push((i, peer, cause)),
            _ => {}
        }
    }
    for n in &nodes {
        assert_eq!(live_members(n).await.len(), N - 1);
        assert_eq!(
            connected(n).await,
            N - 1,
            "a live member's connection was closed"
        );
    }
    assert!(
        disconnects.is_empty(),
        "live members were disconnected: {disconnects:?}"
    );
    let (mut sent, mut received) = (0, 0);
    for n in &nodes {
        let (tx, rx) = oneshot::channel();
        n.cmd.send(Cmd::Io(tx)).unwrap();
        let io = rx.await.unwrap();
        // Every datagram fitted its QUIC connection (the default MTU is below what any QUIC
        // path carries) and decoded.
        assert_eq!(io.datagrams_too_large, 0, "{io:?}");
        assert_eq!(io.datagrams_bad, 0, "{io:?}");
        sent += io.datagrams_sent;
        received += io.datagrams_received;
    }
    assert!(
        received > 0 && received <= sent,
        "sent {sent}, received {received}"
    );
    assert!(
        failed_events.is_empty(),
        "live members declared failed: {failed_events:?}"
    );
    println!(
        "swarm: steady for {steady:.1?} (QUIC idle timeout {:?}, swarm idle timeout {:?}): every node keeps its {} connections, \
         no disconnection, no failure, {suspicions} suspicions",
        quic().max_idle_timeout,
        swarm_config().idle_connection_timeout.unwrap(),
        N - 1
    );

    // --- Crash: drop node 9's swarm. ------------------------------------------------------
    let victim = N - 1;
    let victim_peer = peers[victim];
    let bound = failure_bound(&cfg.swim, N - 1);
    nodes[victim].task.abort();
    let crashed_at = Instant::now();
    let mut first_suspicion: Option<Duration> = None;
    let mut declared: HashMap<usize, Duration> = HashMap::new();
    let survivors: Vec<usize> = (0..N - 1).collect();
    let deadline = crashed_at + bound * 2;
    while declared.len() < survivors.len() {
        let Ok(Some((i, at, r))) = tokio::time::timeout_at(deadline, reports.recv()).await else {
            panic!(
                "only {} of {} survivors declared the crashed node failed within {:?}",
                declared.len(),
                survivors.len(),
                bound * 2
            );
        };
        match r {
            Report::Swim(Event::MemberSuspected { peer, .. }) if peer == victim_peer => {
                first_suspicion.get_or_insert(at - crashed_at);
            }
            Report::Swim(Event::MemberFailed { peer, .. }) if peer == victim_peer => {
                declared.entry(i).or_insert(at - crashed_at);
            }
            Report::Swim(Event::MemberFailed { peer, .. }) => failed_events.push((i, peer)),
            Report::Swim(Event::MemberLeft { peer, .. }) => {
                panic!("node {i} reports {peer} as left")
            }
            _ => {}
        }
    }
    let mut times: Vec<Duration> = declared.values().copied().collect();
    times.sort();
    let period = cfg.swim.probe_interval.as_secs_f64();
    println!(
        "swarm: crash of 1 of {N}: first suspicion after {:.2?}, first failure declaration after {:.2?}, \
         all {} survivors after {:.2?} ({:.1} periods); bound from the config {bound:.2?} ({:.1} periods)",
        first_suspicion.unwrap_or_default(),
        times[0],
        survivors.len(),
        times[times.len() - 1],
        times[times.len() - 1].as_secs_f64() / period,
        bound.as_secs_f64() / period,
    );
    for (i, t) in &declared {
        assert!(
            *t <= bound,
            "node {i} declared the crash after {t:?}, above the bound {bound:?}"
        );
    }
    assert!(
        failed_events.is_empty(),
        "live members declared failed: {failed_events:?}"
    );

    // --- Graceful leave of node 8. --------------------------------------------------------
    let leaver = N - 2;
    let leaver_peer = peers[leaver];
    nodes[leaver].cmd.send(Cmd::Leave).unwrap();
    let left_at = Instant::now();
    let remaining: Vec<usize> = (0..N - 2).collect();
    let mut left_seen: HashMap<usize, Duration> = HashMap::new();
    let mut stopped = false;
    // Wait for every remaining node to report the leave, then long enough for any wrong
    // failure declaration to surface (the maximum suspicion timeout and more).
    let quiet = cfg.swim.suspicion_min_timeout(N - 2) * cfg.swim.suspicion_max_timeout_mult
        + Duration::from_secs(1);
    let deadline = left_at + Duration::from_secs(5) + quiet;
    loop {
        if !stopped && left_at.elapsed() > Duration::from_millis(500) {
            // The leaver had time to send its datagrams; now it goes away.
            nodes[leaver].task.abort();
            stopped = true;
        }
        let wait = Instant::now() + Duration::from_millis(100);
        match tokio::time::timeout_at(wait.min(deadline), reports.recv()).await {
            Ok(Some((i, at, r))) => match r {
                Report::Swim(Event::MemberLeft { peer, .. }) if peer == leaver_peer => {
                    left_seen.entry(i).or_insert(at - left_at);
                }
                Report::Swim(Event::MemberFailed { peer, .. }) if peer != victim_peer => {
                    failed_events.push((i, peer))
                }
                _ => {}
            },
            Ok(None) => unreachable!(),
            Err(_) if Instant::now() >= deadline => break,
            Err(_) => {}
        }
    }
    let mut t: Vec<Duration> = left_seen.values().copied().collect();
    t.sort();
    println!(
        "swarm: graceful leave: {} of {} remaining nodes report it left (last after {:.2?}); \
         no failure declaration in the {quiet:.1?} after",
        left_seen.len(),
        remaining.len(),
        t.last().copied().unwrap_or_default()
    );
    assert_eq!(
        left_seen.len(),
        remaining.len(),
        "not every node saw the leave: {left_seen:?}"
    );
    assert!(
        failed_events.is_empty(),
        "failure declarations after the leave: {:?}",
        failed_events
            .iter()
            .map(|(i, p)| (*i, index_of.get(p)))
            .collect::<Vec<_>>()
    );
    for i in remaining {
        let live = live_members(&nodes[i]).await;
        assert_eq!(live.len(), N - 3, "node {i} sees {live:?}");
    }
    for n in &nodes {
        n.task.abort();
    }
}

/// A node started before its seed is reachable keeps trying (`rejoin_interval`) and joins
/// once the seed is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rejoins_once_its_seed_is_up() {
    let (tx, mut reports) = mpsc::unbounded_channel();
    // Reserve a port for the seed, which starts later: the socket stays bound (and silent, so
    // the joiner's dial fails) until just before the seed binds the port, so no parallel test
    // can take it meanwhile.
    let reserved = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    let seed_key = Keypair::generate();
    let seed_peer = seed_key.peer_id();
    let seed_addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap();
    let joiner = spawn_node(1, Keypair::generate(), loopback(), tx.clone()).await;
    joiner
        .cmd
        .send(Cmd::Join(vec![(seed_peer, seed_addr.clone())]))
        .unwrap();
    // The first attempt fails: nobody listens there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, r) = tokio::time::timeout_at(deadline, reports.recv())
            .await
            .expect("no join failure reported")
            .unwrap();
        if let Report::Swim(Event::JoinFailed { seed, .. }) = r {
            assert_eq!(seed, seed_peer);
            break;
        }
    }
    drop(reserved);
    let seed = spawn_node(0, seed_key, seed_addr, tx.clone()).await;
    let up = Instant::now();
    let mut seen = HashSet::new();
    while seen.len() < 2 {
        let (i, _, r) = tokio::time::timeout_at(deadline + Duration::from_secs(10), reports.recv())
            .await
            .expect("the joiner did not rejoin")
            .unwrap();
        if let Report::Swim(Event::MemberJoined { .. }) = r {
            seen.insert(i);
        }
    }
    println!(
        "swarm: rejoined {:.2?} after the seed came up (rejoin interval {:?})",
        up.elapsed(),
        config().rejoin_interval.unwrap()
    );
    assert_eq!(live_members(&joiner).await, vec![seed.peer]);
    assert_eq!(live_members(&seed).await, vec![joiner.peer]);
    joiner.task.abort();
    seed.task.abort();
}
