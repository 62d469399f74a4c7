//! Usage counters of one scope, and the checks against its limits.

use std::fmt;

use crate::limits::ScopeLimits;

/// Which kind of scope refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    /// The whole node.
    System,
    /// Connections handshaking, streams negotiating.
    Transient,
    /// One peer's streams negotiating.
    TransientPeer,
    /// One peer.
    Peer,
    /// One protocol over all peers.
    Protocol,
    /// One peer on one protocol.
    ProtocolPeer,
    /// One service (a behaviour's own buffers).
    Service,
    /// One connection.
    Connection,
    /// One stream.
    Stream,
}

impl ScopeKind {
    /// The name used in errors and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::System => "system",
            ScopeKind::Transient => "transient",
            ScopeKind::TransientPeer => "transient_peer",
            ScopeKind::Peer => "peer",
            ScopeKind::Protocol => "protocol",
            ScopeKind::ProtocolPeer => "protocol_peer",
            ScopeKind::Service => "service",
            ScopeKind::Connection => "connection",
            ScopeKind::Stream => "stream",
        }
    }
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which resource ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Connections the remote opened.
    InboundConnections,
    /// Connections we opened.
    OutboundConnections,
    /// Connections in all.
    Connections,
    /// Streams the remote opened.
    InboundStreams,
    /// Streams we opened.
    OutboundStreams,
    /// Streams in all.
    Streams,
    /// Memory, in bytes.
    Memory,
}

impl Resource {
    /// The name used in errors and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::InboundConnections => "inbound_connections",
            Resource::OutboundConnections => "outbound_connections",
            Resource::Connections => "connections",
            Resource::InboundStreams => "inbound_streams",
            Resource::OutboundStreams => "outbound_streams",
            Resource::Streams => "streams",
            Resource::Memory => "memory",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope refused a connection, a stream or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{resource} limit of {limit} reached in the {scope} scope")]
pub struct ResourceError {
    /// The scope that refused.
    pub scope: ScopeKind,
    /// What it ran out of.
    pub resource: Resource,
    /// Its limit.
    pub limit: u64,
}

/// An amount of resources: added to or taken from every scope a charge names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Amount {
    pub conns_inbound: u32,
    pub conns_outbound: u32,
    pub streams_inbound: u32,
    pub streams_outbound: u32,
    pub memory: u64,
}

impl Amount {
    pub(crate) fn memory(bytes: u64) -> Amount {
        Amount {
            memory: bytes,
            ..Amount::default()
        }
    }

    pub(crate) fn connection(inbound: bool) -> Amount {
        Amount {
            conns_inbound: u32::from(inbound),
            conns_outbound: u32::from(!inbound),
            ..Amount::default()
        }
    }

    pub(crate) fn stream(inbound: bool) -> Amount {
        Amount {
            streams_inbound: u32::from(inbound),
            streams_outbound: u32::from(!inbound),
            ..Amount::default()
        }
    }

    pub(crate) fn plus(self, other: Amount) -> Amount {
        Amount {
            conns_inbound: self.conns_inbound.saturating_add(other.conns_inbound),
            conns_outbound: self.conns_outbound.saturating_add(other.conns_outbound),
            streams_inbound: self.streams_inbound.saturating_add(other.streams_inbound),
            streams_outbound: self.streams_outbound.saturating_add(other.streams_outbound),
            memory: self.memory.saturating_add(other.memory),
        }
    }
}

/// What a scope holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Connections the remote opened.
    pub conns_inbound: u32,
    /// Connections we opened.
    pub conns_outbound: u32,
    /// Streams the remote opened.
    pub streams_inbound: u32,
    /// Streams we opened.
    pub streams_outbound: u32,
    /// Bytes of memory reserved.
    pub memory: u64,
}

impl Usage {
    /// Connections of both directions.
    pub fn conns(&self) -> u32 {
        self.conns_inbound.saturating_add(self.conns_outbound)
    }

    /// Streams of both directions.
    pub fn streams(&self) -> u32 {
        self.streams_inbound.saturating_add(self.streams_outbound)
    }

    /// Whether the scope holds nothing.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// Whether `a` more fits within `limits`; the first resource that would not fit.
    pub(crate) fn check(&self, a: &Amount, limits: &ScopeLimits) -> Result<(), (Resource, u64)> {
        let over32 = |used: u32, add: u32, limit: u32| add > 0 && used.saturating_add(add) > limit;
        if over32(self.conns_inbound, a.conns_inbound, limits.conns_inbound) {
            return Err((Resource::InboundConnections, limits.conns_inbound.into()));
        }
        if over32(self.conns_outbound, a.conns_outbound, limits.conns_outbound) {
            return Err((Resource::OutboundConnections, limits.conns_outbound.into()));
        }
        if over32(
            self.conns(),
            a.conns_inbound + a.conns_outbound,
            limits.conns,
        ) {
            return Err((Resource::Connections, limits.conns.into()));
        }
        if over32(
            self.streams_inbound,
            a.streams_inbound,
            limits.streams_inbound,
        ) {
            return Err((Resource::InboundStreams, limits.streams_inbound.into()));
        }
        if over32(
            self.streams_outbound,
            a.streams_outbound,
            limits.streams_outbound,
        ) {
            return Err((Resource::OutboundStreams, limits.streams_outbound.into()));
        }
        if over32(
            self.streams(),
            a.streams_inbound + a.streams_outbound,
            limits.streams,
        ) {
            return Err((Resource::Streams, limits.streams.into()));
        }
        if a.memory > 0 && self.memory.saturating_add(a.memory) > limits.memory {
            return Err((Resource::Memory, limits.memory));
        }
        Ok(())
    }

    pub(crate) fn add(&mut self, a: &Amount) {
        self.conns_inbound = self.conns_inbound.saturating_add(a.conns_inbound);
        self.conns_outbound = self.conns_outbound.saturating_add(a.conns_outbound);
        self.streams_inbound = self.streams_inbound.saturating_add(a.streams_inbound);
        self.streams_outbound = self.streams_outbound.saturating_add(a.streams_outbound);
        self.memory = self.memory.saturating_add(a.memory);
    }

    pub(crate) fn sub(&mut self, a: &Amount) {
        self.conns_inbound = self.conns_inbound.saturating_sub(a.conns_inbound);
        self.conns_outbound = self.conns_outbound.saturating_sub(a.conns_outbound);
        self.streams_inbound = self.streams_inbound.saturating_sub(a.streams_inbound);
        self.streams_outbound = self.streams_outbound.saturating_sub(a.streams_outbound);
        self.memory = self.memory.saturating_sub(a.memory);
    }
}
