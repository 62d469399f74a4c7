//! The limits of each scope, and defaults derived from the machine's memory.

use std::collections::HashMap;

use meshwire_core::PeerId;

/// What one scope may hold at once. `u32::MAX` / `u64::MAX` mean no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeLimits {
    /// Connections the remote opened.
    pub conns_inbound: u32,
    /// Connections we opened.
    pub conns_outbound: u32,
    /// Connections of both directions.
    pub conns: u32,
    /// Streams the remote opened.
    pub streams_inbound: u32,
    /// Streams we opened.
    pub streams_outbound: u32,
    /// Streams of both directions.
    pub streams: u32,
    /// Bytes of memory reserved.
    pub memory: u64,
}

impl ScopeLimits {
    /// No limit at all.
    pub const UNLIMITED: ScopeLimits = ScopeLimits {
        conns_inbound: u32::MAX,
        conns_outbound: u32::MAX,
        conns: u32::MAX,
        streams_inbound: u32::MAX,
        streams_outbound: u32::MAX,
        streams: u32::MAX,
        memory: u64::MAX,
    };

    /// Limits on streams only (connections and memory unlimited).
    pub const fn streams(inbound: u32, outbound: u32, total: u32) -> ScopeLimits {
        ScopeLimits {
            streams_inbound: inbound,
            streams_outbound: outbound,
            streams: total,
            ..ScopeLimits::UNLIMITED
        }
    }
}

/// Every scope's limits. [`Limits::for_memory`] derives all of them from one memory budget;
/// [`Limits::from_machine`] takes that budget from the machine.
///
/// The scopes, as in go-libp2p's resource manager:
///
/// | scope | holds | charged for |
/// | --- | --- | --- |
/// | system | everything | every connection, stream and reservation |
/// | transient | what is not yet tied to a peer or protocol | connections before their handshake ends, streams before negotiation ends |
/// | transient × peer (each) | one peer's share of the transient scope | its streams before negotiation ends |
/// | peer (each) | one remote peer's share | its connections, streams and their memory |
/// | protocol (each) | one protocol's share over all peers | its streams and their memory |
/// | protocol × peer (each) | one peer's share of one protocol | its streams on that protocol |
/// | service (each) | a behaviour's own state | what it reserves for itself |
/// | connection (each) | one connection | its memory (the QUIC receive window) |
/// | stream (each) | one stream | its memory (what the behaviour buffers) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The whole node.
    pub system: ScopeLimits,
    /// Connections handshaking and streams negotiating.
    pub transient: ScopeLimits,
    /// One peer's streams negotiating: a peer cannot take the whole transient scope and so
    /// keep everyone else's streams from being negotiated.
    pub transient_peer: ScopeLimits,
    /// Each peer (unless in [`Limits::peers`]).
    pub peer: ScopeLimits,
    /// Each protocol over all peers (unless in [`Limits::protocols`]).
    pub protocol: ScopeLimits,
    /// Each peer on each protocol.
    pub protocol_peer: ScopeLimits,
    /// Each service (a behaviour's own state, reserved with
    /// `ResourceManager::reserve_service_memory`).
    pub service: ScopeLimits,
    /// Memory of one connection.
    pub connection_memory: u64,
    /// Memory of one stream.
    pub stream_memory: u64,
    /// Peers with their own limits (e.g. trusted relays or bootstrap nodes).
    pub peers: HashMap<PeerId, ScopeLimits>,
    /// Protocols with their own limits (by protocol name).
    pub protocols: HashMap<String, ScopeLimits>,
}

/// 1 MiB.
const MIB: u64 = 1 << 20;

/// The QUIC connection receive window of the default limits (see
/// [`Limits::connection_window`]): 1.5 MiB, so 1,000 connections pinned by peers that fill
/// their windows and never let us answer hold 1.5 GiB, not the 15 GB of rust-libp2p's
/// windows. meshwire's `QuicConfig` defaults to it.
pub const DEFAULT_CONNECTION_WINDOW: u64 = 3 * MIB / 2;

/// What a connection holds besides its receive window (quinn's state, the datagram receive
/// buffer, the swarm's bookkeeping), reserved with it: 512 KiB.
pub const CONNECTION_OVERHEAD: u64 = 512 * 1024;

impl Limits {
    /// No limit anywhere: the resource manager only counts (for tests and trusted setups).
    pub fn unlimited() -> Limits {
        Limits {
            system: ScopeLimits::UNLIMITED,
            transient: ScopeLimits::UNLIMITED,
            transient_peer: ScopeLimits::UNLIMITED,
            peer: ScopeLimits::UNLIMITED,
            protocol: ScopeLimits::UNLIMITED,
            protocol_peer: ScopeLimits::UNLIMITED,
            service: ScopeLimits::UNLIMITED,
            connection_memory: u64::MAX,
            stream_memory: u64::MAX,
            peers: HashMap::new(),
            protocols: HashMap::new(),
        }
    }

    /// Limits for a node allowed `memory` bytes in all. The formula (every figure documented
    /// here is a default; each field can be changed after):
    ///
    /// - system: `memory` bytes; connections `memory / 4 MiB` (at least 64, at most
    ///   10,000), half of them inbound; streams 64 per connection.
    /// - transient: 1/16 of the system's memory; a quarter of its connections (at least 32);
    ///   1,024 streams, of which one peer may hold 16 inbound (64 outbound): streams
    ///   negotiating cannot be held by a few peers.
    /// - peer: 1/16 of the system's memory (at least 32 MiB); 8 connections (4 inbound);
    ///   512 streams (256 inbound, 256 outbound).
    /// - protocol: a quarter of the system's memory; streams without limit beyond the
    ///   system's. protocol × peer: 64 streams (32 inbound). service: a quarter of the
    ///   system's memory.
    /// - connection: [`DEFAULT_CONNECTION_WINDOW`] plus [`CONNECTION_OVERHEAD`]; stream: 16 MiB.
    ///
    /// With the default `memory` of [`Limits::from_machine`] (an eighth of the machine's
    /// memory, at least 128 MiB) a 24 GiB machine allows 3 GiB and 768 connections, each
    /// reserving 2 MiB (its 1.5 MiB receive window and overhead).
    pub fn for_memory(memory: u64) -> Limits {
        let memory = memory.max(64 * MIB);
        let conns = u32::try_from(memory / (4 * MIB))
            .unwrap_or(u32::MAX)
            .clamp(64, 10_000);
        let streams = conns.saturating_mul(64);
        Limits {
            system: ScopeLimits {
                conns_inbound: conns / 2,
                conns_outbound: conns,
                conns,
                streams_inbound: streams / 2,
                streams_outbound: streams,
                streams,
                memory,
            },
            transient: ScopeLimits {
                conns_inbound: (conns / 4).max(32),
                conns_outbound: (conns / 4).max(32),
                conns: (conns / 4).max(32),
                streams_inbound: 1024,
                streams_outbound: 1024,
                streams: 1024,
                memory: memory / 16,
            },
            transient_peer: ScopeLimits::streams(16, 64, 64),
            peer: ScopeLimits {
                conns_inbound: 4,
                conns_outbound: 8,
                conns: 8,
                streams_inbound: 256,
                streams_outbound: 256,
                streams: 512,
                memory: (memory / 16).max(32 * MIB),
            },
            protocol: ScopeLimits {
                memory: memory / 4,
                ..ScopeLimits::UNLIMITED
            },
            protocol_peer: ScopeLimits::streams(32, 64, 64),
            service: ScopeLimits {
                memory: memory / 4,
                ..ScopeLimits::UNLIMITED
            },
            connection_memory: DEFAULT_CONNECTION_WINDOW + CONNECTION_OVERHEAD,
            stream_memory: 16 * MIB,
            peers: HashMap::new(),
            protocols: HashMap::new(),
        }
    }

    /// [`Limits::for_memory`] with an eighth of the machine's memory (`MemTotal` of
    /// `/proc/meminfo`), at least 128 MiB; 4 GiB assumed where it cannot be read.
    pub fn from_machine() -> Limits {
        let total = machine_memory().unwrap_or(32 * 1024 * MIB);
        Limits::for_memory((total / 8).max(128 * MIB))
    }

    /// The QUIC connection receive window that fits a connection's memory
    /// ([`Limits::connection_memory`] less [`CONNECTION_OVERHEAD`], at least 64 KiB): what a
    /// transport configures so that what a peer can make us buffer is what its connection
    /// reserved.
    pub fn connection_window(&self) -> u64 {
        self.connection_memory
            .saturating_sub(CONNECTION_OVERHEAD)
            .clamp(64 * 1024, 1 << 30)
    }

    /// The QUIC stream receive window: two thirds of the connection window (1 MiB by
    /// default), so one stream cannot take all of it.
    pub fn stream_window(&self) -> u64 {
        self.connection_window() / 3 * 2
    }

    /// What the swarm reserves for each connection: [`Limits::connection_memory`], or
    /// nothing when that is unlimited (an unlimited manager only counts connections).
    pub fn connection_reservation(&self) -> u64 {
        if self.connection_memory == u64::MAX {
            0
        } else {
            self.connection_memory
        }
    }

    /// The limits of `peer`'s scope.
    pub fn peer_limits(&self, peer: &PeerId) -> &ScopeLimits {
        self.peers.get(peer).unwrap_or(&self.peer)
    }

    /// The limits of `protocol`'s scope.
    pub fn protocol_limits(&self, protocol: &str) -> &ScopeLimits {
        self.protocols.get(protocol).unwrap_or(&self.protocol)
    }
}

impl Default for Limits {
    /// [`Limits::from_machine`].
    fn default() -> Self {
        Limits::from_machine()
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_on_a_24_gib_machine() {
        let l = Limits::for_memory(3 * 1024 * MIB);
        assert_eq!(l.system.conns, 768);
        assert_eq!(l.system.conns_inbound, 384);
        assert_eq!(l.transient.conns, 192);
        assert_eq!(l.peer.conns, 8);
        assert_eq!(l.system.memory, 3 * 1024 * MIB);
        assert_eq!(l.connection_window(), DEFAULT_CONNECTION_WINDOW);
        assert_eq!(l.stream_window(), MIB);
    }

    #[test]
    fn small_budgets_keep_floors() {
        let l = Limits::for_memory(0);
        assert_eq!(l.system.memory, 64 * MIB);
        assert_eq!(l.system.conns, 64);
        assert_eq!(l.transient.conns, 32);
        assert_eq!(l.peer.memory, 32 * MIB);
    }

    #[test]
    fn machine_memory_is_read() {
        // Every Linux machine has /proc/meminfo; elsewhere the fallback applies.
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(machine_memory().is_some_and(|m| m > 64 * MIB));
        }
        assert!(Limits::from_machine().system.memory >= 128 * MIB);
    }
}
