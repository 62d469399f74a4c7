//! The NAT lab's access-link delay (`Lab::set_delay`, NFQUEUE in user space), checked with
//! plain UDP: a host behind a NAT pings an echo socket on the public host, then another host
//! behind a second NAT.
//!
//! - no delay: round trips of a few milliseconds at most;
//! - 50 ms each way per access link: host ↔ public host ≈ 100 ms, host ↔ host (two access
//!   links) ≈ 200 ms, never less;
//! - a burst of numbered datagrams comes back complete and in order;
//! - with `Lab::set_loss` as well: some are lost (the loss counter moves), the rest still in
//!   order and still delayed;
//! - `set_delay(0)` restores the round trip.
//!
//! Needs root, iproute2, nftables and the kernel's `nfnetlink_queue`; skipped with the
//! reason printed otherwise, a failure under `MESHWIRE_REQUIRE_NETNS=1`. Run:
//! `cargo test -p interop-tests --test natlab_delay -- --nocapture`.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use interop_tests::natlab::{self, Lab, NatKind, PUBLIC_IP};

const PORT: u16 = 5000;
const DELAY: Duration = Duration::from_millis(50);
/// What a round trip may take beyond the configured delay (thread wake-ups on a loaded
/// machine, four hops of veth).
const SLACK: Duration = Duration::from_millis(30);

/// Echoes every datagram on `sock` until `stop` is set.
fn echo(sock: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    })
}

/// Round trips of `n` pings from `sock` to `to`, one at a time; a lost ping is skipped.
fn pings(sock: &UdpSocket, to: SocketAddr, n: u32) -> Vec<Duration> {
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..n {
        let tag = format!("ping {i}");
        let t = Instant::now();
        sock.send_to(tag.as_bytes(), to).expect("send");
        while let Ok((len, _)) = sock.recv_from(&mut buf) {
            if &buf[..len] == tag.as_bytes() {
                rtts.push(t.elapsed());
                break;
            }
        }
    }
    rtts.sort();
    rtts
}

/// Sends `n` numbered datagrams back to back (1 ms apart) and returns the numbers echoed, in
/// the order they came back.
fn burst(sock: &UdpSocket, to: SocketAddr, n: u32) -> Vec<u32> {
    for i in 0..n {
        sock.send_to(&i.to_be_bytes(), to).expect("send");
        std::thread::sleep(Duration::from_millis(1));
    }
    sock.set_read_timeout(Some(Duration::from_millis(600)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((len, _)) = sock.recv_from(&mut buf) {
        if len == 4 {
            got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
    }
    got
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn natlab_delay_holds_packets_in_order_and_combines_with_loss() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    let lab = Lab::new(&[NatKind::FullCone, NatKind::PortRestrictedCone]).expect("lab");
    let stop = Arc::new(AtomicBool::new(false));
    let public =
        Lab::udp_socket(&lab.public_ns, SocketAddrV4::new(PUBLIC_IP, 7000)).expect("public socket");
    let public_addr = public.local_addr().expect("address");
    let echo_public = echo(public, Arc::clone(&stop));
    let (s0, s1) = (&lab.sites[0], &lab.sites[1]);
    // Host 0 is behind the full cone: it is reachable at its NAT's address, same port.
    let host0 =
        Lab::udp_socket(&s0.host_ns, SocketAddrV4::new(s0.host_ip, PORT)).expect("host0 socket");
    let host1 =
        Lab::udp_socket(&s1.host_ns, SocketAddrV4::new(s1.host_ip, PORT)).expect("host1 socket");
    let host0_public = SocketAddr::V4(SocketAddrV4::new(s0.wan_ip, PORT));

    let before = pings(&host1, public_addr, 10);
    assert_eq!(before.len(), 10, "no ping may be lost without loss");
    eprintln!("no delay: host ↔ public median {:.2} ms", ms(before[5]));
    assert!(before[5] < Duration::from_millis(20), "{before:?}");

    lab.set_delay(DELAY).expect("set_delay");
    let to_public = pings(&host1, public_addr, 10);
    assert_eq!(to_public.len(), 10, "no ping may be lost without loss");
    let (min, med) = (to_public[0], to_public[5]);
    eprintln!(
        "delay {} ms each way: host ↔ public min {:.2} ms, median {:.2} ms (expected {} ms)",
        DELAY.as_millis(),
        ms(min),
        ms(med),
        (2 * DELAY).as_millis()
    );
    assert!(min >= 2 * DELAY, "{to_public:?}");
    assert!(med <= 2 * DELAY + SLACK, "{to_public:?}");

    // Host 1 → host 0 crosses both access links: four delays per round trip.
    let echo_host0 = echo(host0, Arc::clone(&stop));
    let to_host = pings(&host1, host0_public, 6);
    assert_eq!(to_host.len(), 6, "no ping may be lost without loss");
    eprintln!(
        "host ↔ host (two access links) min {:.2} ms, median {:.2} ms (expected {} ms)",
        ms(to_host[0]),
        ms(to_host[3]),
        (4 * DELAY).as_millis()
    );
    assert!(to_host[0] >= 4 * DELAY, "{to_host:?}");
    assert!(to_host[3] <= 4 * DELAY + 2 * SLACK, "{to_host:?}");

    let got = burst(&host1, public_addr, 300);
    eprintln!("burst of 300 with delay: {} back", got.len());
    assert_eq!(got, (0..300).collect::<Vec<_>>(), "lost or reordered");
    assert!(
        lab.delayed_packets() >= 2 * 300,
        "{}",
        lab.delayed_packets()
    );

    lab.set_loss(30).expect("loss");
    let got = burst(&host1, public_addr, 400);
    let dropped = lab.loss_dropped().expect("loss counter");
    eprintln!(
        "burst of 400 with delay and 30 % loss each way: {} back, {dropped} dropped",
        got.len()
    );
    // 0.7² ≈ 49 % come back; far outside [30 %, 70 %] is not this loss.
    assert!((120..=280).contains(&got.len()), "{} back", got.len());
    assert!(dropped >= 100, "{dropped} dropped");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");
    let lossy = pings(&host1, public_addr, 10);
    assert!(lossy.iter().all(|d| *d >= 2 * DELAY), "{lossy:?}");

    lab.set_loss(0).expect("no loss");
    lab.set_delay(Duration::ZERO).expect("no delay");
    let after = pings(&host1, public_addr, 10);
    assert_eq!(after.len(), 10);
    eprintln!("delay removed: host ↔ public median {:.2} ms", ms(after[5]));
    assert!(after[5] < Duration::from_millis(20), "{after:?}");

    stop.store(true, Ordering::Relaxed);
    echo_public.join().expect("echo thread");
    echo_host0.join().expect("echo thread");
}
