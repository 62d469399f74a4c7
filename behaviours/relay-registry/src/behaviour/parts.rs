//! The behaviours the registry drives, composed with the derive: kademlia, and optionally
//! the relay server and the relay client (each in a [`Toggle`]).

use meshwire_kad as kad;
use meshwire_relay::client;
use meshwire_relay::ServerEvent;
use meshwire_swarm::{NetworkBehaviour, Toggle};

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
    pub(crate) server: Toggle<meshwire_relay::Behaviour>,
    pub(crate) client: Toggle<client::Behaviour>,
}
