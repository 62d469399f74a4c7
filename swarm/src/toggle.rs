//! [`Toggle`]: a behaviour that may be switched off when the swarm is built (rust-libp2p's
//! `behaviour::toggle::Toggle`), so a composed behaviour can carry an optional child — a
//! relay server only when configured, a membership protocol only with realms to join.
//!
//! ```
//! use meshwire_swarm::{DummyBehaviour, NetworkBehaviour, Toggle};
//!
//! let off: Toggle<DummyBehaviour> = Toggle::from(None);
//! assert!(!off.is_enabled());
//! assert!(off.protocols().is_empty());
//! let on = Toggle::from(Some(DummyBehaviour));
//! assert!(on.as_ref().is_some());
//! ```

use std::task::{Context, Poll};

use meshwire_core::{ConnectionId, PeerId};
use meshwire_transport::Multiaddr;

use crate::behaviour::{
    ConnectionDenied, FromSwarm, InboundStream, NetworkBehaviour, OutboundStreamResult, ToSwarm,
};
use crate::protocol::StreamProtocol;

/// `Some(behaviour)` behaves as the behaviour; `None` has no protocols, accepts every
/// connection, keeps none alive and never has an event. Whether it is on is fixed when it is
/// made: the swarm learns the protocols when it starts.
#[derive(Debug, Clone, Default)]
pub struct Toggle<B>(Option<B>);

impl<B> From<Option<B>> for Toggle<B> {
    fn from(inner: Option<B>) -> Self {
        Toggle(inner)
    }
}

impl<B> Toggle<B> {
    /// Whether the behaviour is on.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The behaviour, if on.
    pub fn as_ref(&self) -> Option<&B> {
        self.0.as_ref()
    }

    /// The behaviour, if on.
    pub fn as_mut(&mut self) -> Option<&mut B> {
        self.0.as_mut()
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Toggle<B> {
    type Event = B::Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        self.0.as_ref().map(|b| b.protocols()).unwrap_or_default()
    }

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match &mut self.0 {
            Some(b) => b.handle_pending_inbound_connection(connection, local_addr, remote_addr),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match &mut self.0 {
            Some(b) => {
                b.handle_established_inbound_connection(connection, peer, local_addr, remote_addr)
            }
            None => Ok(()),
        }
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        match &mut self.0 {
            Some(b) => b.handle_pending_outbound_connection(connection, peer, addresses),
            None => Ok(Vec::new()),
        }
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match &mut self.0 {
            Some(b) => b.handle_established_outbound_connection(connection, peer, addr),
            None => Ok(()),
        }
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        self.0
            .as_ref()
            .is_some_and(|b| b.connection_keep_alive(peer, connection))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let Some(b) = &mut self.0 {
            b.on_swarm_event(event);
        }
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        // Off, the behaviour has no protocol, so the swarm routes it no stream.
        if let Some(b) = &mut self.0 {
            b.on_inbound_stream(stream);
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
        // Off, the behaviour asks for no stream, so none is answered to it.
        if let Some(b) = &mut self.0 {
            b.on_outbound_stream(result);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>> {
        match &mut self.0 {
            Some(b) => b.poll(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    /// Denies every connection, keeps every connection alive, claims one protocol and always
    /// has an event.
    struct Strict;

    impl NetworkBehaviour for Strict {
        type Event = u32;

        fn protocols(&self) -> Vec<StreamProtocol> {
            vec![StreamProtocol::new("/strict/1")]
        }

        fn handle_pending_inbound_connection(
            &mut self,
            _: ConnectionId,
            _: &Multiaddr,
            _: &Multiaddr,
        ) -> Result<(), ConnectionDenied> {
            Err(ConnectionDenied::new("strict"))
        }

        fn handle_pending_outbound_connection(
            &mut self,
            _: ConnectionId,
            _: Option<PeerId>,
            _: &[Multiaddr],
        ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
            Ok(vec!["/ip4/1.2.3.4/udp/1/quic-v1".parse().unwrap()])
        }

        fn connection_keep_alive(&self, _: PeerId, _: ConnectionId) -> bool {
            true
        }

        fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<u32>> {
            Poll::Ready(ToSwarm::GenerateEvent(7))
        }
    }

    #[test]
    fn off_is_inert_and_on_is_the_behaviour() {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let a: Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().unwrap();
        let peer = meshwire_core::Keypair::generate().peer_id();
        let conn = ConnectionId::next();

        let mut off: Toggle<Strict> = Toggle::from(None);
        assert!(off.protocols().is_empty());
        assert!(off.handle_pending_inbound_connection(conn, &a, &a).is_ok());
        assert!(off
            .handle_pending_outbound_connection(conn, Some(peer), &[])
            .unwrap()
            .is_empty());
        assert!(!off.connection_keep_alive(peer, conn));
        assert!(off.poll(&mut cx).is_pending());

        let mut on = Toggle::from(Some(Strict));
        assert!(on.is_enabled());
        assert_eq!(on.protocols(), vec![StreamProtocol::new("/strict/1")]);
        assert!(on.handle_pending_inbound_connection(conn, &a, &a).is_err());
        assert_eq!(
            on.handle_pending_outbound_connection(conn, Some(peer), &[])
                .unwrap()
                .len(),
            1
        );
        assert!(on.connection_keep_alive(peer, conn));
        assert!(matches!(
            on.poll(&mut cx),
            Poll::Ready(ToSwarm::GenerateEvent(7))
        ));
    }
}
