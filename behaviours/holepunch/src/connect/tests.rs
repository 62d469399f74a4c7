use meshwire_nat::{Filtering, Mapping, NatProfile, PortAllocation};

use super::*;

fn profile(mapping: Mapping, filtering: Filtering) -> NatProfile {
    NatProfile {
        mapping,
        filtering,
        port_preserving: false,
    }
}

/// The lab's five kinds.
fn kinds() -> [(&'static str, NatProfile); 5] {
    let apdm = |a| Mapping::AddressAndPortDependent(a);
    [
        (
            "full",
            profile(Mapping::EndpointIndependent, Filtering::EndpointIndependent),
        ),
        (
            "restricted",
            profile(Mapping::EndpointIndependent, Filtering::AddressDependent),
        ),
        (
            "port",
            profile(
                Mapping::EndpointIndependent,
                Filtering::AddressAndPortDependent,
            ),
        ),
        (
            "seq",
            profile(
                apdm(PortAllocation::Sequential { delta: 1 }),
                Filtering::AddressAndPortDependent,
            ),
        ),
        (
            "random",
            profile(
                apdm(PortAllocation::Random),
                Filtering::AddressAndPortDependent,
            ),
        ),
    ]
}

#[test]
fn the_strategy_table() {
    let expected = |a: &str, b: &str| -> &'static str {
        match (a, b) {
            ("seq" | "random", "seq" | "random") => "skip",
            ("seq", "port") | ("port", "seq") => "dcutr_predict",
            ("random", "port") | ("port", "random") => "spray",
            _ => "dcutr",
        }
    };
    for (a, pa) in kinds() {
        for (b, pb) in kinds() {
            let m = choose(Some(&pa), Some(&pb));
            assert_eq!(m.label(), expected(a, b), "{a} ↔ {b}: {m:?}");
            // Both peers agree; exactly one of them sprays.
            let back = choose(Some(&pb), Some(&pa));
            assert_eq!(back.label(), m.label(), "{b} ↔ {a}");
            if let (Method::Spray { we_spray: x }, Method::Spray { we_spray: y }) = (m, back) {
                assert_ne!(x, y, "{a} ↔ {b}: one sprayer");
                assert_eq!(x, a == "random", "the random side sprays");
            }
        }
    }
}

#[test]
fn unknown_profiles_fall_back_to_dcutr_and_no_nat_counts_as_open() {
    let (_, random) = kinds()[4];
    assert_eq!(
        choose(None, Some(&random)),
        Method::Dcutr { prediction: true }
    );
    assert_eq!(
        choose(Some(&random), None),
        Method::Dcutr { prediction: true }
    );
    let public = profile(Mapping::None, Filtering::Unknown);
    assert_eq!(
        choose(Some(&public), Some(&random)),
        Method::Dcutr { prediction: false }
    );
    // Filtering not tested counts as the strictest.
    let eim_unknown = profile(Mapping::EndpointIndependent, Filtering::Unknown);
    assert_eq!(
        choose(Some(&random), Some(&eim_unknown)),
        Method::Spray { we_spray: true }
    );
    assert_eq!(
        SkipReason::BothSymmetric.to_string(),
        "both NATs map per destination (symmetric ↔ symmetric)"
    );
}
