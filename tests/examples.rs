//! The README's demo and the ping tool, run as a newcomer runs them.
//!
//! `cargo test` builds the package's examples before running tests; these tests run those
//! binaries from the target directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // The test binary is target/<profile>/deps/examples-<hash>; examples are in
    // target/<profile>/examples/.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir")
        .join("examples")
        .join(name);
    assert!(
        dir.exists(),
        "{} is missing: build the examples first (`cargo test` does)",
        dir.display()
    );
    dir
}

#[test]
fn mesh_demo_prints_a_full_table_and_exits_zero() {
    let out = Command::new(example("mesh"))
        .arg("5")
        .output()
        .expect("run mesh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mesh failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Five node rows, each with 4 peers.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("/quic-v1") && l.contains("12D3KooW"))
        .collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    for r in rows {
        let cols: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(cols[3], "4", "peers column of {r}");
    }
    assert!(stdout.contains("/ipfs/ping/1.0.0"), "{stdout}");
    assert!(stdout.contains("/ipfs/id/1.0.0"), "{stdout}");
    assert!(stdout.contains("10 connections"), "{stdout}");
}

#[test]
fn relay_example_pings_through_a_relay() {
    let out = Command::new(example("relay"))
        .args(["--pings", "3"])
        .output()
        .expect("run relay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "relay failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("/p2p-circuit"), "{stdout}");
    assert!(stdout.contains("(relayed: true)"), "{stdout}");
    let pings = stdout
        .lines()
        .filter(|l| l.contains("rtt=") && l.ends_with("(relayed)"))
        .count();
    assert_eq!(pings, 3, "{stdout}");
}

#[test]
fn ping_tool_pings_another_ping_tool() {
    let mut listener = Command::new(example("ping"))
        .args([
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--interval-ms",
            "100",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ping listener");
    let mut lines = BufReader::new(listener.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let listener_peer = addr.rsplit('/').next().expect("peer id").to_owned();
    assert!(listener_peer.starts_with("12D3KooW"), "{addr}");

    let started = Instant::now();
    let out = Command::new(example("ping"))
        .args(["--dial", &addr, "--count", "3", "--interval-ms", "100"])
        .output()
        .expect("run ping dialer");
    let _ = listener.kill();
    let _ = listener.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ping ")).collect();
    assert_eq!(pings.len(), 3, "{stdout}");
    for p in pings {
        // ping <peer> rtt=<ms>ms
        let mut parts = p.split_whitespace();
        assert_eq!(parts.next(), Some("ping"));
        assert_eq!(parts.next(), Some(listener_peer.as_str()), "{p}");
        let rtt = parts.next().expect("rtt");
        let ms: f64 = rtt
            .strip_prefix("rtt=")
            .and_then(|r| r.strip_suffix("ms"))
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("bad rtt in {p:?}"));
        assert!(ms > 0.0 && ms < 1000.0, "{p}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}
