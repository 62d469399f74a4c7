//! The behaviours the registry drives, composed with the derive: kademlia, and optionally
//! the relay server and the relay client (each in a [`Maybe`]).

use std::task::{Context, Poll};

use meshwire_core::{ConnectionId, PeerId};
use meshwire_kad as kad;
use meshwire_relay::client;
use meshwire_relay::ServerEvent;
use meshwire_swarm::{
    ConnectionDenied, FromSwarm, InboundStream, Multiaddr, NetworkBehaviour, OutboundStreamResult,
    StreamProtocol, ToSwarm,
};

/// A behaviour that may be absent: without one it has no protocols, allows every
/// connection and never has anything to do.
pub(crate) struct Maybe<B>(pub(crate) Option<B>);

impl<B: NetworkBehaviour> NetworkBehaviour for Maybe<B> {
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
        match &mut self.0 {
            Some(b) => b.on_inbound_stream(stream),
            // Not reached: without a behaviour no protocol is claimed.
            None => {
                let mut s = stream.stream;
                s.reset();
            }
        }
    }

    fn on_outbound_stream(&mut self, result: OutboundStreamResult) {
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

/// What the composed behaviours report.
pub(crate) enum PartEvent {
    Kad(kad::Event),
    Server(ServerEvent),
    Client(client::Event),
}

impl From<kad::Event> for PartEvent {
    fn from(e: kad::Event) -> Self {
        PartEvent::Kad(e)
    }
}

impl From<ServerEvent> for PartEvent {
    fn from(e: ServerEvent) -> Self {
        PartEvent::Server(e)
    }
}

impl From<client::Event> for PartEvent {
    fn from(e: client::Event) -> Self {
        PartEvent::Client(e)
    }
}

/// Kademlia, the relay server and the relay client, in this order.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "PartEvent")]
pub(crate) struct Parts {
    pub(crate) kad: kad::Behaviour,
    pub(crate) server: Maybe<meshwire_relay::Behaviour>,
    pub(crate) client: Maybe<client::Behaviour>,
}
