use std::net::SocketAddr;

use proptest::prelude::*;

use crate::*;

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const LOCAL: &str = "10.0.0.2:5000";
const SERVERS: [&str; 3] = [
    "198.51.100.10:3478",
    "198.51.100.10:3479",
    "203.0.113.10:3478",
];

fn observations(mapped: [&str; 3], other_addr: bool, other_port: bool) -> Observations {
    Observations {
        mappings: SERVERS
            .iter()
            .zip(mapped)
            .map(|(s, m)| MappingObservation {
                local: sock(LOCAL),
                server: sock(s),
                mapped: sock(m),
            })
            .collect(),
        from_other_address: Some(other_addr),
        from_other_port: Some(other_port),
    }
}

#[test]
fn the_five_classic_nats() {
    let eim = ["192.0.2.11:5000"; 3];
    let cases = [
        (
            observations(eim, true, true),
            Mapping::EndpointIndependent,
            Filtering::EndpointIndependent,
        ),
        (
            observations(eim, false, true),
            Mapping::EndpointIndependent,
            Filtering::AddressDependent,
        ),
        (
            observations(eim, false, false),
            Mapping::EndpointIndependent,
            Filtering::AddressAndPortDependent,
        ),
        (
            observations(
                ["192.0.2.14:20000", "192.0.2.14:20001", "192.0.2.14:20002"],
                false,
                false,
            ),
            Mapping::AddressAndPortDependent(PortAllocation::Sequential { delta: 1 }),
            Filtering::AddressAndPortDependent,
        ),
        (
            observations(
                ["192.0.2.15:51791", "192.0.2.15:50759", "192.0.2.15:45216"],
                false,
                false,
            ),
            Mapping::AddressAndPortDependent(PortAllocation::Random),
            Filtering::AddressAndPortDependent,
        ),
    ];
    for (obs, mapping, filtering) in cases {
        let p = classify(&obs).unwrap();
        assert_eq!((p.mapping, p.filtering), (mapping, filtering), "{obs:?}");
    }
}

#[test]
fn address_dependent_mapping_and_no_nat() {
    let adm = observations(
        ["192.0.2.9:7000", "192.0.2.9:7000", "192.0.2.9:7002"],
        false,
        true,
    );
    assert_eq!(
        classify(&adm).unwrap().mapping,
        Mapping::AddressDependent(PortAllocation::Sequential { delta: 2 })
    );
    let none = observations([LOCAL; 3], true, true);
    let p = classify(&none).unwrap();
    assert_eq!(p.mapping, Mapping::None);
    assert!(p.port_preserving);
    // A step over the limit or an uneven one is random.
    let far = observations(
        ["192.0.2.9:7000", "192.0.2.9:7100", "192.0.2.9:7200"],
        false,
        false,
    );
    assert_eq!(
        classify(&far).unwrap().mapping,
        Mapping::AddressAndPortDependent(PortAllocation::Random)
    );
    let uneven = observations(
        ["192.0.2.9:7000", "192.0.2.9:7001", "192.0.2.9:7003"],
        false,
        false,
    );
    assert_eq!(
        classify(&uneven).unwrap().mapping,
        Mapping::AddressAndPortDependent(PortAllocation::Random)
    );
}

#[test]
fn incomplete_observations_are_refused() {
    let mut obs = observations(["192.0.2.11:5000"; 3], true, true);
    obs.mappings.pop();
    assert_eq!(classify(&obs), Err(ClassifyError::NotEnoughMappings));
    let mut obs = observations(["192.0.2.11:5000"; 3], true, true);
    obs.mappings[2].server = sock("198.51.100.10:3480");
    assert_eq!(classify(&obs), Err(ClassifyError::MissingServerPair));
    let mut obs = observations(["192.0.2.11:5000"; 3], true, true);
    obs.mappings[1].local = sock("10.0.0.2:5001");
    assert_eq!(classify(&obs), Err(ClassifyError::MixedSockets));
    // Filtering untested.
    let mut obs = observations(["192.0.2.11:5000"; 3], true, true);
    obs.from_other_address = None;
    obs.from_other_port = None;
    assert_eq!(classify(&obs).unwrap().filtering, Filtering::Unknown);
}

#[test]
fn which_pairs_can_punch() {
    let profile = |m: [&str; 3], a, p| classify(&observations(m, a, p)).unwrap();
    let eim = ["192.0.2.11:5000"; 3];
    let full = profile(eim, true, true);
    let restricted = profile(eim, false, true);
    let port_restricted = profile(eim, false, false);
    let seq = profile(
        ["192.0.2.14:20000", "192.0.2.14:20001", "192.0.2.14:20002"],
        false,
        false,
    );
    let random = profile(
        ["192.0.2.15:51791", "192.0.2.15:50759", "192.0.2.15:45216"],
        false,
        false,
    );
    // The lab's matrix (docs/holepunch.md).
    for p in [full, restricted, port_restricted, seq, random] {
        assert!(full.can_punch_with(&p) && restricted.can_punch_with(&p));
    }
    assert!(port_restricted.can_punch_with(&port_restricted));
    assert!(port_restricted.can_punch_with(&seq) && seq.can_punch_with(&port_restricted));
    assert!(!port_restricted.can_punch_with(&random));
    assert!(!seq.can_punch_with(&seq));
    assert!(!seq.can_punch_with(&random) && !random.can_punch_with(&random));
}

proptest! {
    #[test]
    fn classify_never_panics(ports in proptest::collection::vec(any::<u16>(), 0..6), a in any::<Option<bool>>(), p in any::<Option<bool>>()) {
        let mappings = ports.iter().enumerate().map(|(i, port)| MappingObservation {
            local: sock(LOCAL),
            server: sock(SERVERS[i % 3]),
            mapped: SocketAddr::new(sock("192.0.2.1:1").ip(), *port),
        }).collect();
        let _ = classify(&Observations { mappings, from_other_address: a, from_other_port: p });
    }
}
