//! The classifier: observations in, a [`NatProfile`] out.

use std::net::SocketAddr;

/// The largest port step still called sequential (default 16): a NAT handing out ports in
/// steps of at most this, the same step each time, is predictable.
pub const MAX_SEQUENTIAL_DELTA: i32 = 16;

/// How a mapping-dependent NAT picks the public port of a new mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortAllocation {
    /// Each new mapping's port is the previous one plus `delta` (a predicted port window
    /// finds it).
    Sequential {
        /// The step, non-zero, at most [`MAX_SEQUENTIAL_DELTA`] in size.
        delta: i32,
    },
    /// No constant small step (a birthday spray is the only way through).
    Random,
}

/// RFC 4787 mapping behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// No NAT: the observed address is the local one.
    None,
    /// One public address and port for a local socket, whatever the destination (EIM).
    EndpointIndependent,
    /// A new mapping per destination IP (ADM).
    AddressDependent(PortAllocation),
    /// A new mapping per destination IP and port (APDM, "symmetric").
    AddressAndPortDependent(PortAllocation),
}

/// RFC 4787 filtering behaviour: who may send to a mapping opened towards one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Anyone (EIF, "full cone").
    EndpointIndependent,
    /// Any port of an address the host sent to (ADF, "restricted cone").
    AddressDependent,
    /// Only the address and port the host sent to (APDF, "port-restricted").
    AddressAndPortDependent,
    /// Not tested.
    Unknown,
}

/// What a network's NAT does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatProfile {
    /// The mapping behaviour.
    pub mapping: Mapping,
    /// The filtering behaviour.
    pub filtering: Filtering,
    /// The public port of the first mapping equals the local port.
    pub port_preserving: bool,
}

/// One observer's report: our socket `local` sent to `server`, which saw it come from
/// `mapped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingObservation {
    /// Our local socket.
    pub local: SocketAddr,
    /// The observer's address we sent to.
    pub server: SocketAddr,
    /// The source address the observer saw.
    pub mapped: SocketAddr,
}

/// What the observers reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Mappings of one local socket, in the order they were created. For the mapping
    /// class at least: two servers on one IP (different ports) and one on another IP.
    pub mappings: Vec<MappingObservation>,
    /// Whether a datagram from another IP (RFC 5780's "change IP and port") reached the
    /// mapping opened towards the first server; `None`: not tested.
    pub from_other_address: Option<bool>,
    /// Whether one from the first server's IP but another port reached it.
    pub from_other_port: Option<bool>,
}

/// Why observations cannot be classified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// Fewer than the three mappings needed.
    #[error("need mappings towards two ports of one server IP and one other IP")]
    NotEnoughMappings,
    /// The mappings are not all of one local socket.
    #[error("mappings of different local sockets")]
    MixedSockets,
    /// No two servers share an IP, or all do.
    #[error("need two servers on one IP and one on another")]
    MissingServerPair,
}

/// The port allocation seen in `ports` (in creation order, distinct mappings only).
fn allocation(ports: &[u16]) -> PortAllocation {
    let deltas: Vec<i32> = ports
        .windows(2)
        .map(|w| i32::from(w[1]) - i32::from(w[0]))
        .collect();
    match deltas.first() {
        Some(&d) if d != 0 && d.abs() <= MAX_SEQUENTIAL_DELTA && deltas.iter().all(|x| *x == d) => {
            PortAllocation::Sequential { delta: d }
        }
        _ => PortAllocation::Random,
    }
}

/// Classifies `obs` (see [`Observations`] for what is needed).
///
/// # Errors
///
/// [`ClassifyError`] when the observations cannot tell the mapping class.
pub fn classify(obs: &Observations) -> Result<NatProfile, ClassifyError> {
    let m = &obs.mappings;
    let first = m.first().ok_or(ClassifyError::NotEnoughMappings)?;
    if m.len() < 3 {
        return Err(ClassifyError::NotEnoughMappings);
    }
    if m.iter().any(|o| o.local != first.local) {
        return Err(ClassifyError::MixedSockets);
    }
    // A server on the first server's IP but another port, and one on another IP.
    let same_ip = m
        .iter()
        .find(|o| o.server.ip() == first.server.ip() && o.server.port() != first.server.port())
        .ok_or(ClassifyError::MissingServerPair)?;
    let other_ip = m
        .iter()
        .find(|o| o.server.ip() != first.server.ip())
        .ok_or(ClassifyError::MissingServerPair)?;

    let mapping = if m.iter().all(|o| o.mapped == o.local) {
        Mapping::None
    } else if m.iter().all(|o| o.mapped == first.mapped) {
        Mapping::EndpointIndependent
    } else {
        // The distinct public ports, in creation order.
        let mut ports: Vec<u16> = Vec::new();
        for o in m {
            if !ports.contains(&o.mapped.port()) {
                ports.push(o.mapped.port());
            }
        }
        let alloc = allocation(&ports);
        if same_ip.mapped == first.mapped && other_ip.mapped != first.mapped {
            Mapping::AddressDependent(alloc)
        } else {
            Mapping::AddressAndPortDependent(alloc)
        }
    };
    let filtering = match (obs.from_other_address, obs.from_other_port) {
        (Some(true), _) => Filtering::EndpointIndependent,
        (Some(false), Some(true)) => Filtering::AddressDependent,
        (Some(false), Some(false)) => Filtering::AddressAndPortDependent,
        (None, Some(false)) => Filtering::AddressAndPortDependent,
        _ => Filtering::Unknown,
    };
    Ok(NatProfile {
        mapping,
        filtering,
        port_preserving: first.mapped.port() == first.local.port(),
    })
}

impl NatProfile {
    /// Whether unsolicited inbound connections reach the host at its mapped address (what a
    /// relay needs): `Some(true)` with no NAT or an endpoint-independent mapping that filters
    /// nothing (a full cone), `Some(false)` behind address or address-and-port filtering or a
    /// destination-dependent mapping, `None` when the filtering was not tested.
    pub fn accepts_unsolicited(&self) -> Option<bool> {
        match self.mapping {
            Mapping::AddressDependent(_) | Mapping::AddressAndPortDependent(_) => Some(false),
            Mapping::None | Mapping::EndpointIndependent => match self.filtering {
                Filtering::EndpointIndependent => Some(true),
                Filtering::Unknown => None,
                Filtering::AddressDependent | Filtering::AddressAndPortDependent => Some(false),
            },
        }
    }

    /// Whether DCUtR between peers behind `self` and `other` can work with plain
    /// simultaneous open or a predicted port window — `false` means stay relayed (or try
    /// a birthday spray, for random symmetric against endpoint-independent mapping).
    pub fn can_punch_with(&self, other: &NatProfile) -> bool {
        let open = |p: &NatProfile| {
            matches!(
                p.filtering,
                Filtering::EndpointIndependent | Filtering::AddressDependent
            ) || matches!(p.mapping, Mapping::None)
        };
        let dependent = |p: &NatProfile| match p.mapping {
            Mapping::AddressDependent(a) | Mapping::AddressAndPortDependent(a) => Some(a),
            _ => None,
        };
        if open(self) || open(other) {
            return true;
        }
        match (dependent(self), dependent(other)) {
            (None, None) => true,
            // One side sequential, the other endpoint-independent: the window finds it.
            (Some(PortAllocation::Sequential { .. }), None)
            | (None, Some(PortAllocation::Sequential { .. })) => true,
            _ => false,
        }
    }
}
