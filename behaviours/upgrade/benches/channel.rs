//! Message rate and latency through a [`Session`](meshwire_upgrade::Session) against a raw
//! stream on the same direct QUIC connection (loopback), same message sizes, same framing
//! (an unsigned-varint length prefix).
//!
//! `cargo bench -p meshwire-upgrade --bench channel` (`BENCH_MESSAGES`, default 200000;
//! `BENCH_SIZE`, default 64 bytes; `BENCH_RATE`, the paced rate of the latency runs, default
//! 20000/s; `BENCH_BATCH`, the batch of the batched session, default 64; `BENCH_WINDOW`, both
//! windows of the sessions in bytes, default the configuration's: 1 MiB of credit, a 4 MiB
//! send window). Prints the rate of
//! three alternating rounds (raw stream, session with `send`/`recv`, session with
//! `send_batch`/`recv_many`) and their median ratios, how often the session's sender ran out
//! of credit in those rounds, then the p50/p99 latency of three
//! paced rounds and the median ratio of the p99s. With the rates, the UDP datagrams sent per
//! 1,000 messages of each kind (machine-wide, `/proc/net/snmp`) and the CPU time per message
//! of all the process's threads (`/proc/self/task/*/schedstat`; Linux). `BENCH_PROFILE=raw`,
//! `session` or `batched` runs 20 unpaced rounds of that kind only and prints nothing, for a
//! profiler (`perf record`).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::io::{BufReader, BufWriter};
use futures::AsyncWriteExt;
use meshwire_swarm::toolkit::read_frame;
use meshwire_swarm::{StreamProtocol, SwarmEvent};
use meshwire_upgrade as upgrade;

const RAW: StreamProtocol = StreamProtocol::new("/bench/raw/1");

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(i: u64, size: usize) -> Vec<u8> {
    let mut m = vec![0u8; size.max(16)];
    m[..8].copy_from_slice(&i.to_be_bytes());
    let sent = epoch().elapsed().as_nanos() as u64;
    m[8..16].copy_from_slice(&sent.to_be_bytes());
    m
}

fn latency_of(m: &[u8]) -> Duration {
    let sent = Duration::from_nanos(u64::from_be_bytes(m[8..16].try_into().unwrap()));
    epoch().elapsed().saturating_sub(sent)
}

/// Sends `count` messages (all at once when `rate` is 0, else paced); the receiver's
/// latencies and the time from the first send to the last delivery.
async fn run_session(
    a: &upgrade::Session,
    b: &mut upgrade::Session,
    count: u64,
    size: usize,
    rate: u64,
) -> (Duration, Vec<Duration>) {
    let sender = a.sender().unwrap();
    let start = Instant::now();
    let send = tokio::spawn(async move {
        for i in 0..count {
            if rate > 0 {
                pace_to(start, i, rate).await;
            }
            sender.send(message(i, size)).await.unwrap();
        }
    });
    let mut lat = Vec::with_capacity(count as usize);
    for i in 0..count {
        let m = b.recv().await.unwrap();
        assert_eq!(u64::from_be_bytes(m[..8].try_into().unwrap()), i);
        lat.push(latency_of(&m));
    }
    let took = start.elapsed();
    send.await.unwrap();
    (took, lat)
}

/// As [`run_session`] unpaced, with `send_batch` of `batch` messages and `recv_many` of up
/// to `batch`: the time from the first send to the last delivery.
async fn run_session_batched(
    a: &upgrade::Session,
    b: &mut upgrade::Session,
    count: u64,
    size: usize,
    batch: usize,
) -> Duration {
    let sender = a.sender().unwrap();
    let start = Instant::now();
    let send = tokio::spawn(async move {
        let mut messages = Vec::with_capacity(batch);
        let mut i = 0;
        while i < count {
            while messages.len() < batch && i < count {
                messages.push(message(i, size).into());
                i += 1;
            }
            sender.send_batch(&mut messages).await.unwrap();
        }
    });
    let mut got = Vec::with_capacity(batch);
    let mut i = 0;
    while i < count {
        assert!(b.recv_many(&mut got, batch).await > 0);
        for m in got.drain(..) {
            assert_eq!(u64::from_be_bytes(m[..8].try_into().unwrap()), i);
            std::hint::black_box(latency_of(&m));
            i += 1;
        }
    }
    let took = start.elapsed();
    send.await.unwrap();
    took
}

async fn pace_to(start: Instant, i: u64, rate: u64) {
    let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
    if due > Instant::now() {
        tokio::time::sleep_until(due.into()).await;
    }
}

async fn run_raw(
    control: &meshwire_swarm::StreamControl,
    incoming: &mut meshwire_swarm::IncomingStreams,
    peer: meshwire_core::PeerId,
    count: u64,
    size: usize,
    rate: u64,
) -> (Duration, Vec<Duration>) {
    let stream = control.open_stream(peer, RAW).await.unwrap();
    let start = Instant::now();
    let send = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(64 * 1024, stream);
        for i in 0..count {
            if rate > 0 {
                pace_to(start, i, rate).await;
            }
            let body = message(i, size);
            w.write_all(&meshwire_swarm::toolkit::encode_frame(&body))
                .await
                .unwrap();
            // Flush what is written when the next message is not due yet (as the session's
            // writer does when its queue is empty).
            if rate > 0 || i % 256 == 255 || i + 1 == count {
                w.flush().await.unwrap();
            }
        }
        w.close().await.unwrap();
    });
    let inbound = incoming.next().await.unwrap();
    let mut r = BufReader::with_capacity(64 * 1024, inbound.stream);
    let mut lat = Vec::with_capacity(count as usize);
    for i in 0..count {
        let m = read_frame(&mut r, 1 << 16).await.unwrap().unwrap();
        assert_eq!(u64::from_be_bytes(m[..8].try_into().unwrap()), i);
        lat.push(latency_of(&m));
    }
    let took = start.elapsed();
    send.await.unwrap();
    (took, lat)
}

/// UDP datagrams the machine sent so far (`OutDatagrams` of `/proc/net/snmp`), `None` where
/// the file is missing or unreadable.
fn udp_out_datagrams() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "OutDatagrams")
        .and_then(|(_, v)| v.parse().ok())
}

/// CPU time of every thread of the process so far, in ns (the first field of each
/// `/proc/self/task/*/schedstat`); 0 where unreadable.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn pct(l: &mut [Duration], p: f64) -> Duration {
    l.sort();
    l[((l.len() as f64 - 1.0) * p) as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count = env("BENCH_MESSAGES", 200_000);
    let size = env("BENCH_SIZE", 64) as usize;
    let rate = env("BENCH_RATE", 20_000);
    let mut config = upgrade::Config::default();
    if let Some(window) = std::env::var("BENCH_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
    {
        config.session = config
            .session
            .with_recv_window_bytes(window)
            .with_send_window_bytes(window as usize);
    }
    let mut b = node(config.clone());
    let b_id = b.local_peer_id();
    let mut incoming = b.stream_control().accept(RAW).unwrap();
    b.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.next_event().await {
            break address;
        }
    };
    let mut b = Handle::spawn(b);
    let a = node(config);
    let control = a.stream_control();
    let mut a = Handle::spawn(a);
    dial_direct(&a, b_id, addr).await;
    a.wait(|e| matches!(e, SwarmEvent::ConnectionEstablished { .. }).then_some(()))
        .await;
    let s_a = a
        .call(move |s| s.behaviour_mut().upgrade.open(b_id))
        .await
        .unwrap();
    let mut s_b = b
        .wait(|e| match e {
            SwarmEvent::Behaviour(NodeEvent::Upgrade(upgrade::Event::InboundSession(s))) => Some(s),
            _ => None,
        })
        .await;
    // Warm up both.
    run_session(&s_a, &mut s_b, 10_000, size, 0).await;
    run_session_batched(&s_a, &mut s_b, 10_000, size, 64).await;
    run_raw(&control, &mut incoming, b_id, 10_000, size, 0).await;

    println!("{count} messages of {size} bytes, one way, loopback QUIC, one direct connection");
    let batch = env("BENCH_BATCH", 64) as usize;
    let mut rates = Vec::new();
    let mut batched = Vec::new();
    let stalls_before = s_a.stats().credit_stalls;
    let mut datagrams = [0u64; 3];
    let mut cpu = [0u64; 3];
    // `BENCH_PROFILE=raw|session|batched`: only that kind, 20 rounds, nothing printed (for
    // a profiler attached to the whole run).
    if let Ok(kind) = std::env::var("BENCH_PROFILE") {
        for _ in 0..20 {
            match kind.as_str() {
                "raw" => drop(run_raw(&control, &mut incoming, b_id, count, size, 0).await),
                "session" => drop(run_session(&s_a, &mut s_b, count, size, 0).await),
                _ => drop(run_session_batched(&s_a, &mut s_b, count, size, batch).await),
            }
        }
        return;
    }
    for round in 0..3 {
        let (d0, c0) = (udp_out_datagrams(), cpu_ns());
        let (raw_t, _) = run_raw(&control, &mut incoming, b_id, count, size, 0).await;
        let (d1, c1) = (udp_out_datagrams(), cpu_ns());
        let (ses_t, _) = run_session(&s_a, &mut s_b, count, size, 0).await;
        let (d2, c2) = (udp_out_datagrams(), cpu_ns());
        let bat_t = run_session_batched(&s_a, &mut s_b, count, size, batch).await;
        let (d3, c3) = (udp_out_datagrams(), cpu_ns());
        cpu[0] += c1 - c0;
        cpu[1] += c2 - c1;
        cpu[2] += c3 - c2;
        if let (Some(d0), Some(d1), Some(d2), Some(d3)) = (d0, d1, d2, d3) {
            datagrams[0] += d1 - d0;
            datagrams[1] += d2 - d1;
            datagrams[2] += d3 - d2;
        }
        let raw_rate = count as f64 / raw_t.as_secs_f64();
        let ses_rate = count as f64 / ses_t.as_secs_f64();
        let bat_rate = count as f64 / bat_t.as_secs_f64();
        println!(
            "round {round}: raw stream {raw_rate:>10.0} msg/s, session {ses_rate:>10.0} msg/s ({:.2}x)",
            ses_rate / raw_rate
        );
        println!(
            "round {round}: session, send_batch/recv_many of {batch}: {bat_rate:>10.0} msg/s ({:.2}x)",
            bat_rate / raw_rate
        );
        rates.push(ses_rate / raw_rate);
        batched.push(bat_rate / raw_rate);
    }
    rates.sort_by(f64::total_cmp);
    batched.sort_by(f64::total_cmp);
    println!("rate: session / raw stream, median of 3: {:.2}x", rates[1]);
    println!(
        "rate: session with send_batch/recv_many of {batch} / raw stream, median of 3: {:.2}x",
        batched[1]
    );
    let per_k = |d: u64| d as f64 * 1000.0 / (3 * count) as f64;
    println!(
        "UDP datagrams per 1,000 messages, both ends (/proc/net/snmp, machine-wide): raw stream \
         {:.1}, session {:.1}, session batched {:.1}",
        per_k(datagrams[0]),
        per_k(datagrams[1]),
        per_k(datagrams[2])
    );
    let ns = |c: u64| c as f64 / (3 * count) as f64;
    println!(
        "CPU per message, all threads (/proc/self/task/*/schedstat): raw stream {:.0} ns, \
         session {:.0} ns ({:.2}x), session batched {:.0} ns ({:.2}x)",
        ns(cpu[0]),
        ns(cpu[1]),
        ns(cpu[1]) / ns(cpu[0]).max(1e-9),
        ns(cpu[2]),
        ns(cpu[2]) / ns(cpu[0]).max(1e-9)
    );
    let stalls = s_a.stats().credit_stalls - stalls_before;
    let sent = 6 * count;
    println!(
        "credit: the session's sender ran out of the receiver's credit {stalls} times in {sent} \
         messages ({:.0} per million)",
        stalls as f64 * 1e6 / sent as f64
    );
    let paced = rate.min(count);
    // Three paced rounds, alternating, for the p99s (one round is at the machine's mercy).
    let mut p99s = Vec::new();
    for round in 0..3 {
        let (_, mut raw_l) = run_raw(&control, &mut incoming, b_id, paced, size, rate).await;
        let (_, mut ses_l) = run_session(&s_a, &mut s_b, paced, size, rate).await;
        let (raw_p50, raw_p99) = (pct(&mut raw_l, 0.5), pct(&mut raw_l, 0.99));
        let (ses_p50, ses_p99) = (pct(&mut ses_l, 0.5), pct(&mut ses_l, 0.99));
        if round == 0 {
            println!(
                "latency at {rate} msg/s for {paced} messages: raw stream p50 {raw_p50:?} p99 \
                 {raw_p99:?}; session p50 {ses_p50:?} p99 {ses_p99:?}",
            );
        } else {
            println!(
                "latency round {round}: raw stream p50 {raw_p50:?} p99 {raw_p99:?}; session p50 \
                 {ses_p50:?} p99 {ses_p99:?}",
            );
        }
        p99s.push((raw_p99, ses_p99));
    }
    let mut ratios: Vec<f64> = p99s
        .iter()
        .map(|(raw, ses)| ses.as_secs_f64() / raw.as_secs_f64().max(1e-9))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let mut raw: Vec<Duration> = p99s.iter().map(|p| p.0).collect();
    let mut ses: Vec<Duration> = p99s.iter().map(|p| p.1).collect();
    println!(
        "p99 latency: raw stream median {:?}, session median {:?}; session / raw stream, median \
         of 3: {:.2}x",
        pct(&mut raw, 0.5),
        pct(&mut ses, 0.5),
        ratios[1]
    );
}
