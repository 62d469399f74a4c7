//! [`DialOpts`] and [`DialError`].

use meshwire_core::{ConnectionId, PeerId};
use meshwire_transport::{Multiaddr, TransportError};
use thiserror::Error;

use crate::behaviour::ConnectionDenied;

/// When a dial to a known peer goes ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerCondition {
    /// Only if the peer is not connected.
    Disconnected,
    /// Only if no dial to the peer is in progress.
    NotDialing,
    /// Only if the peer is neither connected nor being dialed (the default).
    #[default]
    DisconnectedAndNotDialing,
    /// Always.
    Always,
}

/// What to dial and how.
///
/// ```
/// use meshwire_swarm::{DialOpts, PeerCondition};
/// use meshwire_core::Keypair;
///
/// let peer = Keypair::generate().peer_id();
/// let addr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
/// let opts = DialOpts::peer(peer).address(addr).condition(PeerCondition::Always);
/// assert_eq!(opts.peer_id(), Some(peer));
/// ```
///
/// The connection id is fixed when the options are built ([`DialOpts::connection_id`]), so
/// the options are not `Clone`: build new ones for another dial.
#[derive(Debug)]
pub struct DialOpts {
    pub(crate) peer: Option<PeerId>,
    pub(crate) addresses: Vec<Multiaddr>,
    pub(crate) condition: PeerCondition,
    pub(crate) extend_addresses_through_behaviour: bool,
    pub(crate) connection: ConnectionId,
}

impl DialOpts {
    /// Dials `peer`: at the addresses given, plus those behaviours and the swarm's address
    /// book know.
    pub fn peer(peer: PeerId) -> Self {
        DialOpts {
            peer: Some(peer),
            addresses: Vec::new(),
            condition: PeerCondition::default(),
            extend_addresses_through_behaviour: true,
            connection: ConnectionId::next(),
        }
    }

    /// Dials an address without knowing who answers (a trailing `/p2p/<peer>` still pins
    /// the peer).
    pub fn unknown_peer(addr: Multiaddr) -> Self {
        DialOpts {
            peer: None,
            addresses: vec![addr],
            condition: PeerCondition::Always,
            extend_addresses_through_behaviour: false,
            connection: ConnectionId::next(),
        }
    }

    /// Adds an address to try.
    pub fn address(mut self, addr: Multiaddr) -> Self {
        self.addresses.push(addr);
        self
    }

    /// Adds addresses to try.
    pub fn addresses(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.addresses.extend(addrs);
        self
    }

    /// Sets the [`PeerCondition`].
    pub fn condition(mut self, condition: PeerCondition) -> Self {
        self.condition = condition;
        self
    }

    /// Whether behaviours (and the address book) may add addresses (default `true` when a
    /// peer is given).
    pub fn extend_addresses_through_behaviour(mut self, yes: bool) -> Self {
        self.extend_addresses_through_behaviour = yes;
        self
    }

    /// The peer dialed, if known.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer
    }

    /// The id the connection will have.
    pub fn connection_id(&self) -> ConnectionId {
        self.connection
    }
}

impl From<Multiaddr> for DialOpts {
    /// Dials the address; a trailing `/p2p/<peer>` makes it a dial of that peer.
    fn from(addr: Multiaddr) -> Self {
        match meshwire_transport::split_peer_id(&addr, None) {
            Ok((_, Some(peer))) => DialOpts::peer(peer)
                .address(addr)
                .condition(PeerCondition::Always)
                .extend_addresses_through_behaviour(false),
            _ => DialOpts::unknown_peer(addr),
        }
    }
}

impl From<PeerId> for DialOpts {
    fn from(peer: PeerId) -> Self {
        DialOpts::peer(peer)
    }
}

/// Why a dial failed.
#[derive(Debug, Error)]
pub enum DialError {
    /// The peer dialed is ourselves.
    #[error("dialing the local peer")]
    LocalPeerId,
    /// No address to dial was given or known.
    #[error("no addresses to dial")]
    NoAddresses,
    /// The [`PeerCondition`] was not met.
    #[error("dial condition {0:?} not met")]
    ConditionFalse(PeerCondition),
    /// Too many dials are pending ([`SwarmConfig::max_pending_outgoing`](crate::SwarmConfig::max_pending_outgoing)).
    #[error("pending outgoing connection limit of {limit} reached")]
    PendingLimit {
        /// The limit.
        limit: usize,
    },
    /// An established-connection limit would be exceeded.
    #[error("connection limit: {0}")]
    Limit(#[from] crate::LimitExceeded),
    /// A behaviour refused the connection.
    #[error(transparent)]
    Denied(ConnectionDenied),
    /// The peer that answered is not the one dialed.
    #[error("wrong peer at {address}: expected {expected}, got {obtained}")]
    WrongPeerId {
        /// The peer dialed.
        expected: PeerId,
        /// The peer that answered.
        obtained: PeerId,
        /// Where.
        address: Multiaddr,
    },
    /// Every address failed; the error of each.
    #[error("all {} addresses failed: {}", .0.len(), fmt_errors(.0))]
    Transport(Vec<(Multiaddr, TransportError)>),
    /// The dial did not finish within [`SwarmConfig::dial_timeout`](crate::SwarmConfig::dial_timeout);
    /// the errors of the addresses that failed before.
    #[error("dial timed out ({} addresses failed before: {})", .0.len(), fmt_errors(.0))]
    Timeout(Vec<(Multiaddr, TransportError)>),
    /// The options' connection id is already in use (options are single-use).
    #[error("connection id {0} is already in use")]
    DuplicateConnectionId(ConnectionId),
    /// The swarm closed or the dial was dropped.
    #[error("dial aborted")]
    Aborted,
}

fn fmt_errors(errs: &[(Multiaddr, TransportError)]) -> String {
    errs.iter()
        .map(|(a, e)| format!("{a}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl DialError {
    /// The peer-id mismatch behind this error, if that is what it is: `(expected, obtained)`.
    /// Covers both [`DialError::WrongPeerId`] and a mismatch reported by the transport.
    pub fn peer_id_mismatch(&self) -> Option<(PeerId, PeerId)> {
        match self {
            DialError::WrongPeerId {
                expected, obtained, ..
            } => Some((*expected, *obtained)),
            DialError::Transport(errs) | DialError::Timeout(errs) => {
                errs.iter().find_map(|(_, e)| match e {
                    TransportError::PeerIdMismatch { expected, actual } => {
                        Some((*expected, *actual))
                    }
                    TransportError::Tls(meshwire_transport::tls::TlsError::PeerIdMismatch {
                        expected,
                        actual,
                    }) => Some((*expected, *actual)),
                    _ => None,
                })
            }
            _ => None,
        }
    }
}
