//! [`DialOpts`] and [`PeerCondition`]: what to dial and when. Dial failures are
//! [`DialError`](crate::DialError)s.

use meshwire_core::{ConnectionId, PeerId};
use meshwire_transport::Multiaddr;

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
