//! Hostile peers against a default node in its own process (the `victim` binary), on
//! loopback, in a short form of each attack: a few seconds, tens of attacker connections.
//! Each test checks, while an honest peer keeps pinging the victim and looking keys up
//! through it, that the victim's resident memory stays under a stated bound, that the honest
//! peer's pings and lookups keep succeeding within a stated time, and that the defence's own
//! counter moved. `cargo test -p hostile-tests -- --nocapture --test-threads 1` prints the
//! figures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::{AsyncWriteExt, FutureExt};
use meshwire::swarm::Stream;
use meshwire::transport::Multiaddr;
use meshwire::{identify, kad, ping};

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
    let (seen, peak, before, after) = under_attack(
        "receive-window fill (40 connections x 2 streams x 10 MB)",
        &victim,
        duration,
        || attackers(&victim, 40, 2048, ping::PROTOCOL, 2, false, work),
    )
    .await;
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
    let (seen, peak, before, after) = under_attack(
        "kad slowloris (40 connections x 40 streams)",
        &victim,
        duration,
        || attackers(&victim, 40, 1 << 20, kad::PROTOCOL, 40, false, work),
    )
    .await;
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
    let (seen, peak, before, after) = under_attack(
        "identify push storm (30 connections, 4 pushes at a time each)",
        &victim,
        duration,
        || {
            attackers(
                &victim,
                30,
                1 << 20,
                identify::PUSH_PROTOCOL_NAME,
                4,
                true,
                work,
            )
        },
    )
    .await;
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
    assert!(seen.rtts.len() >= 20 && seen.rtt_quantile(0.9) < Duration::from_millis(250));
    assert!(seen.lookups_ok >= 5 && seen.lookups_failed == 0);
}
