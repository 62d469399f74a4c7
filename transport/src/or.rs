//! [`OrTransport`]: two transports as one, e.g. QUIC and the circuit-relay client in one swarm.
//!
//! Dials go to the first transport that [can dial](Transport::can_dial) the address; a listen
//! address goes to the first transport that accepts it (a transport refuses an address it cannot
//! use with [`TransportError::UnsupportedAddress`], and the other one is tried). Listener ids are
//! process-unique, so removing a listener asks both. Events of both are polled in turn, so a
//! busy transport cannot starve the other.
//!
//! ```
//! use meshwire_transport::{identity::Keypair, memory::MemoryTransport, quic::{QuicConfig, QuicTransport}};
//! use meshwire_transport::{Transport, TransportExt};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! let key = Keypair::generate();
//! let quic = QuicTransport::new(key.clone(), QuicConfig::default())?;
//! let memory = MemoryTransport::new(key.peer_id());
//! let both = quic.or_transport(memory);
//! assert!(both.can_dial(&"/ip4/127.0.0.1/udp/4001/quic-v1".parse()?));
//! assert!(both.can_dial(&"/memory/7".parse()?));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok(()) }
//! ```

use std::task::{Context, Poll};

use meshwire_core::PeerId;
use multiaddr::Multiaddr;

use crate::{ListenerId, PendingConnection, Transport, TransportError, TransportEvent};

/// Two transports composed: see the [module docs](self).
#[derive(Debug)]
pub struct OrTransport<A, B> {
    first: A,
    second: B,
    /// Which transport's events are polled first next time (alternates for fairness).
    second_first: bool,
}

impl<A, B> OrTransport<A, B> {
    /// Composes `first` and `second`; `first` is preferred when both could serve an address.
    pub fn new(first: A, second: B) -> Self {
        OrTransport {
            first,
            second,
            second_first: false,
        }
    }

    /// The first transport.
    pub fn first(&self) -> &A {
        &self.first
    }

    /// The second transport.
    pub fn second(&self) -> &B {
        &self.second
    }

    /// The first transport, mutably.
    pub fn first_mut(&mut self) -> &mut A {
        &mut self.first
    }

    /// The second transport, mutably.
    pub fn second_mut(&mut self) -> &mut B {
        &mut self.second
    }
}

impl<A: Transport, B: Transport> Transport for OrTransport<A, B> {
    fn local_peer_id(&self) -> PeerId {
        self.first.local_peer_id()
    }

    fn listen_on(&mut self, addr: Multiaddr) -> Result<ListenerId, TransportError> {
        match self.first.listen_on(addr.clone()) {
            Err(TransportError::UnsupportedAddress { .. }) => self.second.listen_on(addr),
            other => other,
        }
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.first.remove_listener(id) || self.second.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: &Multiaddr,
        expected: Option<PeerId>,
    ) -> Result<PendingConnection, TransportError> {
        if self.first.can_dial(addr) {
            self.first.dial(addr, expected)
        } else {
            self.second.dial(addr, expected)
        }
    }

    fn can_dial(&self, addr: &Multiaddr) -> bool {
        self.first.can_dial(addr) || self.second.can_dial(addr)
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let mut addrs = self.first.listen_addrs();
        addrs.extend(self.second.listen_addrs());
        addrs
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        self.second_first = !self.second_first;
        if self.second_first {
            if let Poll::Ready(ev) = self.second.poll_event(cx) {
                return Poll::Ready(ev);
            }
            self.first.poll_event(cx)
        } else {
            if let Poll::Ready(ev) = self.first.poll_event(cx) {
                return Poll::Ready(ev);
            }
            self.second.poll_event(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::memory::MemoryTransport;
    use crate::quic::{QuicConfig, QuicTransport};
    use crate::TransportExt;

    #[tokio::test]
    async fn listens_and_dials_through_the_transport_that_fits() {
        let key = Keypair::generate();
        let mut server = QuicTransport::new(key.clone(), QuicConfig::default())
            .unwrap()
            .or_transport(MemoryTransport::new(key.peer_id()));
        let quic_listener = server
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .unwrap();
        let port = rand::random::<u64>() | 1 << 40;
        let mem_listener = server
            .listen_on(format!("/memory/{port}").parse().unwrap())
            .unwrap();
        assert_ne!(quic_listener, mem_listener);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let TransportEvent::NewListenAddr { listener, addr } = server.next_event().await {
                seen.push((listener, addr));
            }
        }
        assert!(seen
            .iter()
            .any(|(l, a)| *l == quic_listener && a.to_string().contains("quic-v1")));
        assert!(seen
            .iter()
            .any(|(l, a)| *l == mem_listener && a.to_string().starts_with("/memory/")));
        assert_eq!(server.listen_addrs().len(), 2);

        // A memory dial goes to the memory transport and reaches the memory listener.
        let mut client = MemoryTransport::new(Keypair::generate().peer_id());
        let dial = client
            .dial(
                &format!("/memory/{port}").parse().unwrap(),
                Some(key.peer_id()),
            )
            .unwrap();
        let incoming = loop {
            if let TransportEvent::Incoming {
                upgrade,
                local_addr,
                ..
            } = server.next_event().await
            {
                assert!(local_addr.to_string().starts_with("/memory/"));
                break upgrade;
            }
        };
        let (out, inc) = tokio::join!(dial, incoming);
        assert_eq!(out.unwrap().peer_id(), key.peer_id());
        assert!(inc.is_ok());

        assert!(server.remove_listener(mem_listener));
        assert!(server.remove_listener(quic_listener));
        assert!(!server.remove_listener(quic_listener));
    }

    #[test]
    fn an_address_neither_can_use_is_refused() {
        let key = Keypair::generate();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut both = QuicTransport::new(key.clone(), QuicConfig::default())
            .unwrap()
            .or_transport(MemoryTransport::new(key.peer_id()));
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/80".parse().unwrap();
        assert!(!both.can_dial(&addr));
        assert!(matches!(
            both.listen_on(addr.clone()),
            Err(TransportError::UnsupportedAddress { .. })
        ));
        assert!(both.dial(&addr, None).is_err());
    }
}
