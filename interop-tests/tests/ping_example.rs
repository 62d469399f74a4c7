//! The `ping` example (the tool a newcomer runs) against a real rust-libp2p 0.57 ping node,
//! in both directions.
//!
//! The example binary is built by `cargo test --workspace` (the README's test command builds
//! every package's examples); these tests run it from the target directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{ping, SwarmBuilder};
use tokio::sync::mpsc;

fn ping_example() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir")
        .join("examples")
        .join("ping");
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`), which build the examples",
        path.display()
    );
    path
}

fn libp2p_ping_swarm() -> libp2p::Swarm<ping::Behaviour> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| {
            ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(100)))
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_example_pings_a_libp2p_node() {
    let mut swarm = libp2p_ping_swarm();
    let lp_id = *swarm.local_peer_id();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            let _ = tx.send(swarm.select_next_some().await);
        }
    });
    let target = format!("{addr}/p2p/{lp_id}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(ping_example())
            .args(["--dial", &target, "--count", "3", "--interval-ms", "100"])
            .output()
            .expect("run the ping example")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ping ")).collect();
    assert_eq!(pings.len(), 3, "{stdout}");
    for p in &pings {
        assert!(p.starts_with(&format!("ping {lp_id} rtt=")), "{p}");
        assert!(p.ends_with("ms"), "{p}");
    }
    // libp2p saw and pinged the example as well.
    let mut lp_pinged = false;
    while let Ok(ev) = rx.try_recv() {
        if let SwarmEvent::Behaviour(ping::Event { result: Ok(_), .. }) = ev {
            lp_pinged = true;
        }
    }
    assert!(lp_pinged, "the libp2p node pinged the meshwire example too");
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_node_pings_the_listening_example() {
    let mut child = Command::new(ping_example())
        .args([
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--interval-ms",
            "100",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the ping example");
    let stdout = child.stdout.take().expect("stdout");
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(10), line_rx.recv())
        .await
        .expect("the example prints its address")
        .expect("a line");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let mw_peer: libp2p::PeerId = addr.rsplit('/').next().unwrap().parse().expect("peer id");

    let mut swarm = libp2p_ping_swarm();
    let lp_id = *swarm.local_peer_id();
    swarm
        .dial(addr.parse::<libp2p::Multiaddr>().unwrap())
        .unwrap();
    let mut rtts = 0;
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        while rtts < 3 {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(ping::Event { peer, result, .. }) => {
                    assert_eq!(peer, mw_peer);
                    result.expect("libp2p pings the example");
                    rtts += 1;
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial: {error}"),
                _ => {}
            }
        }
        // And the example pinged back, printing the libp2p node's peer id.
        loop {
            tokio::select! {
                line = line_rx.recv() => {
                    let line = line.expect("example output");
                    if line.starts_with(&format!("ping {lp_id} rtt=")) {
                        return;
                    }
                }
                _ = swarm.select_next_some() => {}
            }
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.expect("pings in both directions within 20 s");
}
