//! `meshwire node` processes in the NAT lab (`interop_tests::natlab`): the binary, not
//! in-process nodes, runs in each network namespace (`ip netns exec`).
//!
//! The public host runs one node: circuit relay server and NAT probe server (observe on
//! `198.51.100.10:4001`, `:4002` and `203.0.113.10:4001`, dial-backs from `:4003` of both
//! IPs). Behind a port-restricted cone NAT a target node detects its NAT (`[nat]
//! observers`), then listens through the relay. Callers behind a port-restricted cone, a
//! sequential symmetric and a random symmetric NAT detect theirs and bootstrap to the
//! target's relayed address; the connector in each pair must choose, from the two detected
//! profiles, DCUtR, DCUtR with port prediction and the birthday spray respectively, and end
//! with a direct connection, which both processes report on stdout.
//!
//! Needs root, iproute2 and nftables; skipped with the reason printed otherwise, a failure
//! under `MESHWIRE_REQUIRE_NETNS=1`. Run: `cargo test -p meshwire-cli --test natlab --
//! --nocapture`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{new_key, NodeProc};
use interop_tests::natlab::{self, Lab, NatKind, PUBLIC_IP, PUBLIC_IP2};

/// Time for a detection, a reservation, a relayed connection and the punch.
const STEP: Duration = Duration::from_secs(45);

/// `meshwire node --config <config>` inside namespace `ns`; its stdout and stderr lines
/// collected. Waits for its peer id.
fn spawn_in(ns: &str, config: &Path) -> NodeProc {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_meshwire")])
        .args(["node", "--config", config.to_str().unwrap()])
        .env_remove("MESHWIRE_CONFIG")
        .env_remove("RUST_LOG");
    let mut node = NodeProc::collect(command);
    node.peer = node.wait_line("meshwire: peer id ").trim().to_string();
    node
}

/// The first line of `node` containing every one of `needles`, waiting up to `limit`.
fn wait_for(node: &NodeProc, needles: &[&str], limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(l) = node
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return l.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needles:?} within {limit:?} in {:#?}",
            node.lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The config of a node behind a NAT: listening on its private address, detecting its NAT
/// against the public node, punching with a spray whose numbers make a hit near certain.
fn host_config(key: &Path, ip: std::net::Ipv4Addr, relay: &str, extra: &str) -> String {
    let observers = [(PUBLIC_IP, 4001), (PUBLIC_IP, 4002), (PUBLIC_IP2, 4001)]
        .iter()
        .map(|(ip, port)| format!("\"/ip4/{ip}/udp/{port}/quic-v1/p2p/{relay}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[node]
key = "{key}"
listen = ["/ip4/{ip}/udp/4001/quic-v1"]
{extra}
[relay_server]
enabled = false
[nat]
observers = [{observers}]
startup_wait = "30s"
[holepunch]
# A closed lab network: the spray may aim at the address the peer names.
trust_hello_addrs = true
# K = 512 mappings, N = 1,024 probes: a hit with probability 1 - (1 - 512/64512)^1024 > 0.9997.
spray_sockets = 512
spray_probes = 1024
"#,
        key = key.display()
    )
}

#[test]
fn natlab_meshwire_binaries_detect_their_nats_and_punch_through_the_relay() {
    if let Some(reason) = natlab::missing_prerequisite() {
        natlab::skip(&reason);
        return;
    }
    let kinds = [
        NatKind::PortRestrictedCone,
        NatKind::PortRestrictedCone,
        NatKind::SymmetricSequential,
        NatKind::SymmetricRandom,
    ];
    let lab = Lab::new(&kinds).expect("lab");
    let dir = tempfile::tempdir().unwrap();

    // The public node: relay and probe server.
    let (relay_key, relay) = new_key(dir.path(), "relay.key");
    let relay_config = dir.path().join("relay.toml");
    std::fs::write(
        &relay_config,
        format!(
            r#"[node]
key = "{key}"
listen = ["/ip4/{PUBLIC_IP}/udp/4001/quic-v1", "/ip4/{PUBLIC_IP}/udp/4002/quic-v1", "/ip4/{PUBLIC_IP2}/udp/4001/quic-v1"]
[nat_server]
enabled = true
dial_back_other_port = "/ip4/{PUBLIC_IP}/udp/4003/quic-v1"
dial_back_other_ip = "/ip4/{PUBLIC_IP2}/udp/4003/quic-v1"
dial_backs_per_second = 16
"#,
            key = relay_key.display()
        ),
    )
    .unwrap();
    let public = spawn_in(&lab.public_ns, &relay_config);
    assert_eq!(public.peer, relay);
    wait_for(&public, &["listening on", &PUBLIC_IP2.to_string()], STEP);

    // The target, behind the first port-restricted cone: detects, then reserves.
    let relay_addr = format!("/ip4/{PUBLIC_IP}/udp/4001/quic-v1/p2p/{relay}");
    let (target_key, target_peer) = new_key(dir.path(), "target.key");
    let target_config = dir.path().join("target.toml");
    std::fs::write(
        &target_config,
        host_config(
            &target_key,
            lab.sites[0].host_ip,
            &relay,
            &format!("relay_listen = [\"{relay_addr}\"]"),
        ),
    )
    .unwrap();
    let target = spawn_in(&lab.sites[0].host_ns, &target_config);
    let nat = wait_for(&target, &["meshwire: nat: "], STEP);
    assert!(
        nat.contains("mapping endpoint-independent, filtering address-and-port-dependent"),
        "target behind a port-restricted cone: {nat}"
    );
    wait_for(&target, &["listening on", "p2p-circuit"], STEP);
    let circuit = format!("{relay_addr}/p2p-circuit/p2p/{target_peer}");

    // Each caller: its NAT, and the method the two detected profiles call for.
    let cases = [
        (1, "mapping endpoint-independent", "dcutr,"),
        (
            2,
            "mapping address-and-port-dependent, sequential +1",
            "dcutr_predict,",
        ),
        (3, "mapping address-and-port-dependent, random", "spray,"),
    ];
    let mut callers = Vec::new();
    for (site, mapping, method) in cases {
        let s = &lab.sites[site];
        let (key, peer) = new_key(dir.path(), &format!("caller{site}.key"));
        let config = dir.path().join(format!("caller{site}.toml"));
        std::fs::write(
            &config,
            host_config(
                &key,
                s.host_ip,
                &relay,
                &format!("bootstrap = [\"{circuit}\"]"),
            ),
        )
        .unwrap();
        let started = Instant::now();
        let caller = spawn_in(&s.host_ns, &config);
        let nat = wait_for(&caller, &["meshwire: nat: "], STEP);
        assert!(nat.contains(mapping), "{:?}: {nat}", s.kind);
        let line = wait_for(
            &caller,
            &[
                &format!("holepunch {target_peer}: direct connection ("),
                method,
            ],
            STEP,
        );
        println!(
            "{:?} caller ({:.1} s from start): {line}",
            s.kind,
            started.elapsed().as_secs_f64()
        );
        let theirs = wait_for(
            &target,
            &[&format!("holepunch {peer}: direct connection ("), method],
            STEP,
        );
        println!("{:?} target: {theirs}", s.kind);
        callers.push(caller);
    }
    drop(callers);
    drop(target);
    drop(public);
}
