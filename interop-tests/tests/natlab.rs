//! The NAT lab's five NATs behave as their kind (`interop_tests::natlab`), checked with plain
//! UDP sockets: a host behind each NAT sends to three observers on the public host —
//! `O1 = 198.51.100.10:3478`, `O2 = 198.51.100.10:3479` (same IP, other port) and
//! `O3 = 203.0.113.10:3478` (other IP) — which report the source they see (the mapping), and
//! the observers send back to the mapping the host opened towards `O1` only (the filtering).
//!
//! | kind | mapping (ports seen by O1, O2, O3) | inbound to O1's mapping from O1 / O2 / O3 |
//! | --- | --- | --- |
//! | full cone | one port | yes / yes / yes |
//! | restricted cone | one port | yes / yes / no |
//! | port-restricted cone | one port | yes / no / no |
//! | symmetric sequential | p, p+1, p+2 | yes / no / no |
//! | symmetric random | three ports, not sequential | yes / no / no |
//!
//! The same observations go through `meshwire_nat::classify`, which must name each NAT:
//! mapping EIM / APDM-sequential (delta 1) / APDM-random, filtering EIF / ADF / APDF.
//!
//! Needs root, iproute2 and nftables; skipped with the reason printed otherwise, a failure
//! under `MESHWIRE_REQUIRE_NETNS=1`. Run: `cargo test -p interop-tests --test natlab --
//! --nocapture`.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use interop_tests::natlab::{self, Lab, NatKind, PUBLIC_IP, PUBLIC_IP2};
use meshwire_nat::{
    classify, Filtering, Mapping, MappingObservation, NatProfile, Observations, PortAllocation,
};

const HOST_PORT: u16 = 5000;
/// How long a packet that should arrive may take; packets that should not arrive are
/// waited for as long.
const WAIT: Duration = Duration::from_millis(400);

/// Receives datagrams on `sock` until `WAIT` passes quietly; returns (payload, source).
fn drain(sock: &UdpSocket) -> Vec<(String, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    let mut deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        sock.set_read_timeout(Some(left)).expect("timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                out.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
                deadline = Instant::now() + WAIT;
            }
            Err(_) => return out,
        }
    }
}

/// The source `observer` sees for one datagram `tag` from `host`.
fn observe(host: &UdpSocket, observer: &UdpSocket, tag: &str) -> SocketAddr {
    let to = observer.local_addr().expect("observer address");
    host.send_to(tag.as_bytes(), to).expect("send");
    let got = drain(observer);
    let seen: Vec<_> = got.iter().filter(|(p, _)| p == tag).collect();
    assert_eq!(seen.len(), 1, "{tag}: observer {to} received {got:?}");
    seen[0].1
}

#[derive(Debug, PartialEq, Eq)]
struct Behaviour {
    /// O1, O2, O3's views share one port.
    endpoint_independent_mapping: bool,
    /// The three ports are consecutive (p, p+1, p+2).
    sequential: bool,
    /// Inbound to O1's mapping arrives from O1, O2, O3.
    inbound: [bool; 3],
}

fn expected(kind: NatKind) -> Behaviour {
    let (eim, seq, inbound) = match kind {
        NatKind::FullCone => (true, false, [true, true, true]),
        NatKind::RestrictedCone => (true, false, [true, true, false]),
        NatKind::PortRestrictedCone => (true, false, [true, false, false]),
        NatKind::SymmetricSequential => (false, true, [true, false, false]),
        NatKind::SymmetricRandom => (false, false, [true, false, false]),
    };
    Behaviour {
        endpoint_independent_mapping: eim,
        sequential: seq,
        inbound,
    }
}

/// What `meshwire_nat::classify` must make of each kind's observations.
fn expected_profile(kind: NatKind) -> (Mapping, Filtering) {
    match kind {
        NatKind::FullCone => (Mapping::EndpointIndependent, Filtering::EndpointIndependent),
        NatKind::RestrictedCone => (Mapping::EndpointIndependent, Filtering::AddressDependent),
        NatKind::PortRestrictedCone => (
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
        ),
        NatKind::SymmetricSequential => (
            Mapping::AddressAndPortDependent(PortAllocation::Sequential { delta: 1 }),
            Filtering::AddressAndPortDependent,
        ),
        NatKind::SymmetricRandom => (
            Mapping::AddressAndPortDependent(PortAllocation::Random),
            Filtering::AddressAndPortDependent,
        ),
    }
}

fn probe(lab: &Lab, site: usize, observers: &[UdpSocket; 3]) -> (Behaviour, NatProfile) {
    let s = &lab.sites[site];
    let host =
        Lab::udp_socket(&s.host_ns, SocketAddrV4::new(s.host_ip, HOST_PORT)).expect("host socket");
    // 1. The mapping towards O1.
    let m1 = observe(&host, &observers[0], "to-o1");
    assert_eq!(m1.ip(), s.wan_ip, "{:?}: the NAT's public address", s.kind);
    // 2. Filtering: the three observers send to that mapping; the host has sent to O1 only.
    for (i, o) in observers.iter().enumerate() {
        o.send_to(format!("from-o{}", i + 1).as_bytes(), m1)
            .expect("send");
    }
    let got = drain(&host);
    let inbound = [1, 2, 3].map(|i| got.iter().any(|(p, _)| *p == format!("from-o{i}")));
    // 3. The mappings towards O2 and O3.
    let m2 = observe(&host, &observers[1], "to-o2");
    let m3 = observe(&host, &observers[2], "to-o3");
    let ports = [m1.port(), m2.port(), m3.port()];
    println!(
        "{:?}: mappings {m1} {m2} {m3}, inbound from O1/O2/O3: {inbound:?}",
        s.kind
    );
    let local = host.local_addr().expect("host address");
    let servers = observers
        .iter()
        .map(|o| o.local_addr().expect("observer address"));
    let profile = classify(&Observations {
        mappings: servers
            .zip([m1, m2, m3])
            .map(|(server, mapped)| MappingObservation {
                local,
                server,
                mapped,
            })
            .collect(),
        from_other_address: Some(inbound[2]),
        from_other_port: Some(inbound[1]),
    })
    .expect("classified");
    println!("{:?}: classified as {profile:?}", s.kind);
    let behaviour = Behaviour {
        endpoint_independent_mapping: ports[0] == ports[1] && ports[1] == ports[2],
        sequential: ports[1] == ports[0].wrapping_add(1) && ports[2] == ports[1].wrapping_add(1),
        inbound,
    };
    (behaviour, profile)
}

#[test]
fn natlab_nat_kinds_behave_as_their_kind() {
    if let Some(reason) = natlab::missing_prerequisite() {
        if natlab::skip(&reason) {
            return;
        }
    }
    let lab = Lab::new(&NatKind::ALL).expect("lab");
    let observers = [
        SocketAddrV4::new(PUBLIC_IP, 3478),
        SocketAddrV4::new(PUBLIC_IP, 3479),
        SocketAddrV4::new(PUBLIC_IP2, 3478),
    ]
    .map(|a| Lab::udp_socket(&lab.public_ns, a).expect("observer socket"));
    for (i, kind) in NatKind::ALL.iter().enumerate() {
        let (seen, profile) = probe(&lab, i, &observers);
        assert_eq!(seen, expected(*kind), "{kind:?}");
        assert_eq!(
            (profile.mapping, profile.filtering),
            expected_profile(*kind),
            "{kind:?}: the classifier"
        );
    }
}
