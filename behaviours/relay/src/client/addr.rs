//! Circuit addresses: `<relay address>/p2p/<relay>/p2p-circuit[/p2p/<peer>]`.

use meshwire_core::PeerId;
use meshwire_transport::{multiaddr, with_peer_id, Multiaddr, Protocol, TransportError};

/// A parsed circuit address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitAddr {
    /// How to reach the relay (empty when the address starts with `/p2p/<relay>`: the
    /// swarm's address book is used then).
    pub relay_addr: Multiaddr,
    /// The relay.
    pub relay: PeerId,
    /// The peer behind the relay, for dials.
    pub dst: Option<PeerId>,
}

impl CircuitAddr {
    /// Parses `addr`; `expected` (the peer a dial expects) fills in or must match the
    /// trailing `/p2p/<peer>`.
    pub fn parse(addr: &Multiaddr, expected: Option<PeerId>) -> Result<Self, TransportError> {
        let unsupported = |reason| TransportError::UnsupportedAddress {
            addr: addr.clone(),
            reason,
        };
        let parts: Vec<Protocol<'_>> = addr.iter().collect();
        let circuit = parts
            .iter()
            .position(|p| matches!(p, Protocol::P2pCircuit))
            .ok_or_else(|| unsupported("not a circuit address (no /p2p-circuit)"))?;
        let relay = match circuit.checked_sub(1).and_then(|i| parts.get(i)) {
            Some(Protocol::P2p(mh)) => {
                peer_of(mh).ok_or_else(|| unsupported("invalid relay peer id"))?
            }
            _ => return Err(unsupported("/p2p-circuit must follow /p2p/<relay>")),
        };
        let dst = match &parts[circuit + 1..] {
            [] => None,
            [Protocol::P2p(mh)] => {
                Some(peer_of(mh).ok_or_else(|| unsupported("invalid destination peer id"))?)
            }
            _ => return Err(unsupported("only /p2p/<peer> may follow /p2p-circuit")),
        };
        let dst = match (dst, expected) {
            (Some(d), Some(e)) if d != e => {
                return Err(TransportError::AddressPeerMismatch {
                    expected: e,
                    in_addr: d,
                })
            }
            (d, e) => d.or(e),
        };
        if parts[..circuit - 1]
            .iter()
            .any(|p| matches!(p, Protocol::P2pCircuit | Protocol::P2p(_)))
        {
            return Err(unsupported("nested circuits are not supported"));
        }
        let relay_addr: Multiaddr = parts[..circuit - 1].iter().cloned().collect();
        Ok(CircuitAddr {
            relay_addr,
            relay,
            dst,
        })
    }

    /// `<relay address>/p2p/<relay>/p2p-circuit`: the address a listener through this relay
    /// is reached at.
    pub fn listen_addr(&self) -> Multiaddr {
        listen_addr(&self.relay_addr, self.relay)
    }

    /// The full address of `dst` through this relay.
    pub fn to_peer(&self, dst: PeerId) -> Multiaddr {
        with_peer_id(&self.listen_addr(), dst)
    }
}

/// `<relay_addr>/p2p/<relay>/p2p-circuit`.
pub fn listen_addr(relay_addr: &Multiaddr, relay: PeerId) -> Multiaddr {
    with_peer_id(relay_addr, relay).with(Protocol::P2pCircuit)
}

fn peer_of(mh: &multiaddr::PeerId) -> Option<PeerId> {
    PeerId::from_bytes(&mh.to_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwire_core::Keypair;

    #[test]
    fn parses_listen_and_dial_addresses() {
        let relay = Keypair::generate().peer_id();
        let dst = Keypair::generate().peer_id();
        let listen: Multiaddr = format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        let c = CircuitAddr::parse(&listen, None).unwrap();
        assert_eq!(c.relay, relay);
        assert_eq!(c.dst, None);
        assert_eq!(c.relay_addr.to_string(), "/ip4/10.0.0.1/udp/4001/quic-v1");
        assert_eq!(c.listen_addr(), listen);

        let dial = c.to_peer(dst);
        let d = CircuitAddr::parse(&dial, None).unwrap();
        assert_eq!(d.dst, Some(dst));
        assert_eq!(d.relay, relay);
        // The swarm strips the trailing /p2p and passes the peer separately.
        assert_eq!(
            CircuitAddr::parse(&listen, Some(dst)).unwrap().dst,
            Some(dst)
        );
        let other = Keypair::generate().peer_id();
        assert!(matches!(
            CircuitAddr::parse(&dial, Some(other)),
            Err(TransportError::AddressPeerMismatch { .. })
        ));
        // A relay known only by id.
        let bare: Multiaddr = format!("/p2p/{relay}/p2p-circuit").parse().unwrap();
        assert!(CircuitAddr::parse(&bare, None)
            .unwrap()
            .relay_addr
            .is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_circuit() {
        let relay = Keypair::generate().peer_id();
        for bad in [
            "/ip4/10.0.0.1/udp/4001/quic-v1".to_string(),
            "/ip4/10.0.0.1/udp/4001/quic-v1/p2p-circuit".to_string(),
            format!("/p2p/{relay}/p2p-circuit/ip4/1.2.3.4"),
            format!("/p2p/{relay}/p2p-circuit/p2p/{relay}/p2p-circuit"),
        ] {
            let addr: Multiaddr = bad.parse().unwrap();
            assert!(CircuitAddr::parse(&addr, None).is_err(), "{bad}");
        }
    }
}
