//! The ping behaviour between real swarms on QUIC loopback.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{ping_config, prober, spawn_node, spawn_node_with, spawn_node_with_quic};
use futures::{AsyncReadExt, AsyncWriteExt};
use meshwire_ping::{self as ping, Failure, PING_SIZE};
use meshwire_swarm::{ConnectionCloseCause, DummyBehaviour, SwarmConfig, SwarmEvent};
use meshwire_transport::quic::QuicConfig;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_swarms_ping_each_other() {
    let behaviours: Vec<ping::Behaviour> = (0..3)
        .map(|_| ping::Behaviour::new(ping_config(200)))
        .collect();
    let tables: Vec<ping::RttTable> = behaviours.iter().map(|b| b.rtt_table()).collect();
    let mut nodes = Vec::new();
    for b in behaviours {
        nodes.push(spawn_node(b).await);
    }
    let peers: Vec<_> = nodes.iter().map(|n| n.peer).collect();
    // 0 -> 1, 0 -> 2, 1 -> 2: every pair connected once.
    nodes[0].dial(&nodes[1].addr);
    nodes[0].dial(&nodes[2].addr);
    nodes[1].dial(&nodes[2].addr);

    // Every node gets successful pings from both others.
    let deadline = tokio::time::Instant::now() + 20 * SECOND;
    for (i, node) in nodes.iter_mut().enumerate() {
        let expected: HashSet<_> = peers.iter().copied().filter(|p| *p != peers[i]).collect();
        let mut answered = HashMap::new();
        while answered.len() < 2 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = node
                .next_ping(left)
                .await
                .unwrap_or_else(|| panic!("node {i}: only {answered:?} answered in time"));
            let rtt = ev
                .result
                .unwrap_or_else(|e| panic!("node {i}: ping of {} failed: {e}", ev.peer));
            assert!(
                expected.contains(&ev.peer),
                "node {i}: ping of unknown peer"
            );
            assert!(
                rtt > Duration::ZERO && rtt < SECOND,
                "implausible rtt {rtt:?}"
            );
            answered.insert(ev.peer, rtt);
        }
    }

    // Every node knows the round trip to both others.
    for (i, table) in tables.iter().enumerate() {
        let snap = table.snapshot();
        assert_eq!(snap.len(), 2, "node {i}: {snap:?}");
        for (j, peer) in peers.iter().enumerate() {
            if i != j {
                let rtt = table.get(peer).expect("rtt known");
                assert!(rtt < SECOND);
            }
        }
        assert_eq!(table.get(&peers[i]), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_is_respected() {
    let mut a = spawn_node(ping::Behaviour::new(ping_config(100))).await;
    let b = spawn_node(ping::Behaviour::new(ping_config(100))).await;
    a.dial(&b.addr);
    let first = a.next_ping(10 * SECOND).await.expect("first ping");
    assert!(first.result.is_ok(), "{:?}", first.result);

    // A ping every 100 ms plus a loopback round trip: about ten a second, not hundreds.
    let start = tokio::time::Instant::now();
    let mut count = 0;
    while let Some(ev) = a.next_ping(SECOND.saturating_sub(start.elapsed())).await {
        assert!(ev.result.is_ok(), "{:?}", ev.result);
        assert_eq!(ev.peer, b.peer);
        assert_eq!(
            ev.connection, first.connection,
            "one connection, one stream"
        );
        count += 1;
    }
    // The lower bound leaves room for a loaded machine; the point is "periodic, not a flood".
    assert!((3..=12).contains(&count), "{count} pings in one second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_ping_is_unsupported_and_left_alone() {
    let mut a = spawn_node(ping::Behaviour::new(ping_config(50))).await;
    let mut dummy = spawn_node(DummyBehaviour).await;
    a.dial(&dummy.addr);
    let ev = a.next_ping(10 * SECOND).await.expect("a ping event");
    assert_eq!(ev.peer, dummy.peer);
    assert!(
        matches!(ev.result, Err(Failure::Unsupported)),
        "{:?}",
        ev.result
    );
    // No further attempt: no event, and no new stream at the dummy, for many intervals.
    assert!(a.next_ping(SECOND).await.is_none());
    let mut refused = 0;
    while let Some(ev) = dummy.next(Duration::from_millis(100)).await {
        if let SwarmEvent::InboundStreamError { .. } = ev {
            refused += 1;
        }
    }
    assert!(refused <= 1, "{refused} ping streams refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_peer_gives_failure_or_close_and_clears_rtt() {
    let behaviour = ping::Behaviour::new(ping_config(100));
    let table = behaviour.rtt_table();
    let mut a = spawn_node(behaviour).await;
    let b = spawn_node(ping::Behaviour::new(ping_config(100))).await;
    let b_peer = b.peer;
    a.dial(&b.addr);
    let ev = a.next_ping(10 * SECOND).await.expect("first ping");
    assert!(ev.result.is_ok());
    assert!(table.get(&b_peer).is_some());

    // Let a ping be under way, then drop b entirely.
    tokio::time::sleep(Duration::from_millis(130)).await;
    b.kill().await;

    let mut closed = false;
    let mut failed = false;
    let deadline = tokio::time::Instant::now() + 60 * SECOND;
    while !closed {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match a.next(left).await.expect("a notices b is gone") {
            SwarmEvent::Behaviour(ping::Event {
                peer,
                result: Err(_),
                ..
            }) => {
                assert_eq!(peer, b_peer);
                failed = true;
            }
            SwarmEvent::ConnectionClosed { peer_id, .. } => {
                assert_eq!(peer_id, b_peer);
                closed = true;
            }
            _ => {}
        }
    }
    tracing::info!(failed, "b's loss noticed");
    eprintln!("b's loss noticed: connection closed, ping failure reported: {failed}");
    assert_eq!(
        table.get(&b_peer),
        None,
        "rtt cleared with the last connection"
    );
    assert!(!a.task.is_finished(), "a's swarm is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_remote_times_out_and_gets_new_streams() {
    let config = ping::Config::default()
        .with_interval(Duration::from_millis(100))
        .with_timeout(Duration::from_millis(300));
    let mut a = spawn_node(ping::Behaviour::new(config)).await;
    let (p, mut handle) = prober(true);
    let silent = spawn_node(p).await;
    a.dial(&silent.addr);

    // The first timeout is silent (libp2p's rule), the second is reported.
    let ev = a.next_ping(10 * SECOND).await.expect("a failure");
    assert_eq!(ev.peer, silent.peer);
    assert!(
        matches!(ev.result, Err(Failure::Timeout)),
        "{:?}",
        ev.result
    );
    // Each attempt came on a new stream; the remote holds them all, unanswered.
    let mut streams = Vec::new();
    while let Ok(s) = handle.inbound.try_recv() {
        streams.push(s);
    }
    assert!(streams.len() >= 2, "{} streams", streams.len());
    // Each stream carried exactly one ping.
    let mut buf = [0u8; PING_SIZE];
    streams[0].read_exact(&mut buf).await.expect("a ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_echo_is_a_failure() {
    let mut a = spawn_node(ping::Behaviour::new(ping_config(50))).await;
    let (p, mut handle) = prober(true);
    let liar = spawn_node(p).await;
    a.dial(&liar.addr);
    tokio::spawn(async move {
        while let Some(mut s) = handle.inbound.recv().await {
            tokio::spawn(async move {
                let mut buf = [0u8; PING_SIZE];
                while s.read_exact(&mut buf).await.is_ok() {
                    buf[PING_SIZE - 1] ^= 0xff;
                    if s.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let ev = a.next_ping(10 * SECOND).await.expect("a failure");
    assert_eq!(ev.peer, liar.peer);
    match ev.result {
        Err(Failure::Other(e)) => assert!(e.to_string().contains("differs"), "{e}"),
        other => panic!("expected Failure::Other, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_inbound_stream_replaces_the_old_one() {
    let a = spawn_node(ping::Behaviour::new(ping_config(60_000))).await;
    let (p, handle) = prober(false);
    let mut probe = spawn_node(p).await;
    probe.connect(&a.addr).await;

    async fn ping_once(s: &mut meshwire_swarm::Stream) -> std::io::Result<()> {
        let payload: [u8; PING_SIZE] = rand::random();
        s.write_all(&payload).await?;
        s.flush().await?;
        let mut echo = [0u8; PING_SIZE];
        s.read_exact(&mut echo).await?;
        assert_eq!(echo, payload);
        Ok(())
    }

    let mut first = handle.open(a.peer).await.expect("stream");
    ping_once(&mut first).await.expect("first stream answers");
    ping_once(&mut first).await.expect("and again");
    let mut second = handle.open(a.peer).await.expect("stream");
    ping_once(&mut second).await.expect("second stream answers");

    // The first stream was dropped by a: a ping on it is not answered.
    let r = tokio::time::timeout(5 * SECOND, ping_once(&mut first)).await;
    assert!(matches!(r, Ok(Err(_))), "old stream still answered: {r:?}");
    ping_once(&mut second)
        .await
        .expect("the new one still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_sized_floods_are_echoed_frame_by_frame() {
    let a = spawn_node(ping::Behaviour::new(ping_config(60_000))).await;
    let (p, handle) = prober(false);
    let mut probe = spawn_node(p).await;
    probe.connect(&a.addr).await;
    let s = handle.open(a.peer).await.expect("stream");
    // 10,000 bytes: 312 whole frames and 16 bytes of a partial one, in odd-sized writes.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let (mut r, mut w) = s.split();
    let writer = async {
        for chunk in data.chunks(333) {
            w.write_all(chunk).await.unwrap();
        }
        w.close().await.unwrap();
    };
    let reader = async {
        let mut back = Vec::new();
        // Ends with EOF or an error (a drops the stream at the partial frame).
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
            }
        }
        back
    };
    let ((), back) = tokio::time::timeout(10 * SECOND, futures::future::join(writer, reader))
        .await
        .expect("echo completes");
    let whole = 10_000 / PING_SIZE * PING_SIZE;
    assert_eq!(back.len(), whole);
    assert_eq!(back[..], data[..whole]);

    // a is unharmed: a fresh stream is answered.
    handle.assert_answered(a.peer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_alone_do_not_keep_a_connection_open() {
    let config = SwarmConfig {
        idle_connection_timeout: Some(Duration::from_millis(400)),
        ..SwarmConfig::default()
    };
    let mut a = spawn_node_with(ping::Behaviour::new(ping_config(50)), config.clone()).await;
    let b = spawn_node_with(ping::Behaviour::new(ping_config(50)), config).await;
    a.dial(&b.addr);
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    let cause = loop {
        match a.next(10 * SECOND).await.expect("the connection closes") {
            SwarmEvent::Behaviour(ev) => {
                assert!(ev.result.is_ok(), "{:?}", ev.result);
                pings += 1;
            }
            SwarmEvent::ConnectionClosed { cause, .. } => break cause,
            _ => {}
        }
    };
    // Pinged busily all along, and still closed as idle (by whichever side came first).
    assert!(
        cause == ConnectionCloseCause::Idle || format!("{cause:?}").contains("idle"),
        "{cause:?}"
    );
    assert!(pings >= 3, "{pings} pings");
    assert!(started.elapsed() < 5 * SECOND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_never_reads_gets_its_stream_reset() {
    // Small windows, so that a's echoes fill the prober's quickly.
    let quic = QuicConfig {
        stream_receive_window: 64 * 1024,
        receive_window: 256 * 1024,
        ..QuicConfig::default()
    };
    let limit = SECOND;
    let a = spawn_node_with_quic(
        ping::Behaviour::new(ping_config(60_000).with_echo_timeout(limit)),
        SwarmConfig::default(),
        quic.clone(),
    )
    .await;
    let (p, handle) = prober(false);
    let mut probe = spawn_node_with_quic(p, SwarmConfig::default(), quic).await;
    probe.connect(&a.addr).await;
    let mut s = handle.open(a.peer).await.expect("stream");
    // Pings, and more pings, never reading an echo: a's echo write blocks once the
    // prober's window is full; past the echo limit a resets the stream, which fails our
    // writes (without the limit, they would block forever once a stops reading).
    let chunk = vec![5u8; 16 * 1024];
    let started = tokio::time::Instant::now();
    let mut written = 0usize;
    let error = tokio::time::timeout(20 * SECOND, async {
        loop {
            if let Err(e) = s.write_all(&chunk).await {
                break e;
            }
            written += chunk.len();
        }
    })
    .await
    .expect("a resets the stream within its echo limit");
    let took = started.elapsed();
    assert!(took >= limit, "reset after {took:?}, before the limit");
    assert!(took < 10 * SECOND, "reset only after {took:?}");
    assert!(written >= 64 * 1024, "{written} bytes written: {error}");

    // a is unharmed: a fresh stream is answered.
    handle.assert_answered(a.peer).await;
}
