//! Choosing how to leave a relay: both peers' [`NatProfile`]s in, a [`Method`] out
//! ([`choose`]), and the birthday spray for the pairs DCUtR cannot connect ([`spray`]).
//!
//! The table (`docs/holepunch.md`, "Strategy"): the mapping classes decide, the filtering
//! of the endpoint-independent side refines.
//!
//! | us ↔ them | method |
//! | --- | --- |
//! | both endpoint-independent mapping (or no NAT) | DCUtR |
//! | one side maps per destination (ADM/APDM), the other is EIM with EIF or ADF filtering | DCUtR (the open side accepts the new mapping) |
//! | sequential ports ↔ EIM with APDF filtering | DCUtR with the predicted port window of the retries |
//! | random ports ↔ EIM with APDF filtering | birthday spray: the random side opens K mappings, the other probes N ports |
//! | both map per destination | skip: stay on the relay ([`SkipReason::BothSymmetric`]) |
//!
//! A profile not known (the remote runs no connector, or our detector has not finished)
//! falls back to DCUtR, what a rust-libp2p peer would do.

pub mod spray;
pub mod wire;

#[cfg(feature = "swarm")]
pub(crate) mod behaviour;
#[cfg(feature = "swarm")]
mod exchange;
#[cfg(feature = "swarm")]
pub(crate) mod metrics;
#[cfg(feature = "swarm")]
pub(crate) mod traversal;

/// The NAT profile types (`meshwire_nat`'s), re-exported for [`choose`] and
/// `Connector::set_local_profile` callers.
pub use meshwire_nat::{Filtering, Mapping, NatProfile, PortAllocation};

/// How two peers on a relayed connection try to connect directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// DCUtR (`/libp2p/dcutr`). `prediction`: one side's NAT hands out sequential ports
    /// per destination, so the retries' predicted port window is what connects.
    Dcutr {
        /// Whether the port window is needed.
        prediction: bool,
    },
    /// A birthday spray (`/meshwire/spray/1.0.0`): the side behind random per-destination
    /// mapping opens many mappings, the other probes random ports of its NAT.
    Spray {
        /// Whether we are the side opening the mappings (the sprayer); `false`: the prober.
        we_spray: bool,
    },
    /// No punching: the relayed connection stays.
    Skip(SkipReason),
}

impl Method {
    /// A short label (metrics, tables): `dcutr`, `dcutr_predict`, `spray`, `skip`.
    pub fn label(&self) -> &'static str {
        match self {
            Method::Dcutr { prediction: false } => "dcutr",
            Method::Dcutr { prediction: true } => "dcutr_predict",
            Method::Spray { .. } => "spray",
            Method::Skip(_) => "skip",
        }
    }
}

/// Why no punching is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SkipReason {
    /// Both NATs map per destination and filter by address and port: neither side can
    /// learn or guess where the other's packets will come from (random ↔ random: two
    /// unknowns of 64,512 ports each; sequential ↔ anything per-destination: each side
    /// would have to predict the other's next port at once).
    #[error("both NATs map per destination (symmetric ↔ symmetric)")]
    BothSymmetric,
}

/// A mapping that depends on the destination, and how its ports are chosen.
fn dependent(p: &NatProfile) -> Option<PortAllocation> {
    match p.mapping {
        Mapping::AddressDependent(a) | Mapping::AddressAndPortDependent(a) => Some(a),
        Mapping::None | Mapping::EndpointIndependent => None,
    }
}

/// Whether the NAT lets in packets from any port of an address we sent to (or from
/// anywhere): the remote's new mapping gets through.
fn open_filtering(p: &NatProfile) -> bool {
    matches!(p.mapping, Mapping::None)
        || matches!(
            p.filtering,
            Filtering::EndpointIndependent | Filtering::AddressDependent
        )
}

/// The method for us behind `local` and the remote behind `remote`; `None` for a profile
/// not known (DCUtR then, with the window). Symmetric: `choose(a, b)` and `choose(b, a)`
/// agree (with `we_spray` swapped), so both peers pick the same without a further message.
pub fn choose(local: Option<&NatProfile>, remote: Option<&NatProfile>) -> Method {
    let (Some(local), Some(remote)) = (local, remote) else {
        return Method::Dcutr { prediction: true };
    };
    match (dependent(local), dependent(remote)) {
        (None, None) => Method::Dcutr { prediction: false },
        (Some(_), Some(_)) => Method::Skip(SkipReason::BothSymmetric),
        (Some(alloc), None) => one_dependent(alloc, remote, true),
        (None, Some(alloc)) => one_dependent(alloc, local, false),
    }
}

/// One side (`local_is_dependent` tells which) maps per destination with `alloc`; `eim`
/// is the other side's profile.
fn one_dependent(alloc: PortAllocation, eim: &NatProfile, local_is_dependent: bool) -> Method {
    if open_filtering(eim) {
        return Method::Dcutr { prediction: false };
    }
    match alloc {
        PortAllocation::Sequential { .. } => Method::Dcutr { prediction: true },
        PortAllocation::Random => Method::Spray {
            we_spray: local_is_dependent,
        },
    }
}

#[cfg(test)]
mod tests;
