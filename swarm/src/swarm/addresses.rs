//! Addresses: our listen addresses, our external addresses and the peers' addresses (kept
//! in the address book for later dials), each change told to every behaviour.

use meshwire_core::PeerId;
use meshwire_transport::{ListenerId, Multiaddr, TransportError};

use super::Swarm;
use crate::behaviour::{FromSwarm, NetworkBehaviour};
use crate::event::SwarmEvent;

impl<B: NetworkBehaviour> Swarm<B> {
    pub(super) fn on_new_listen_addr(&mut self, listener: ListenerId, addr: Multiaddr) {
        let list = self.listeners.entry(listener).or_default();
        if !list.contains(&addr) {
            list.push(addr.clone());
        }
        tracing::info!(%addr, "listening");
        self.behaviour.on_swarm_event(FromSwarm::NewListenAddr {
            listener,
            addr: &addr,
        });
        self.events.push_back(SwarmEvent::NewListenAddr {
            listener_id: listener,
            address: addr,
        });
    }

    pub(super) fn on_listener_closed(
        &mut self,
        listener: ListenerId,
        reason: Result<(), TransportError>,
    ) {
        let addresses = self.listeners.remove(&listener).unwrap_or_default();
        self.behaviour.on_swarm_event(FromSwarm::ListenerClosed {
            listener,
            reason: reason.as_ref().map(|_| ()),
        });
        self.events.push_back(SwarmEvent::ListenerClosed {
            listener_id: listener,
            addresses,
            reason,
        });
    }

    pub(super) fn new_external_candidate(&mut self, addr: Multiaddr) {
        self.behaviour
            .on_swarm_event(FromSwarm::NewExternalAddrCandidate { addr: &addr });
        self.events
            .push_back(SwarmEvent::NewExternalAddrCandidate { address: addr });
    }

    pub(super) fn confirm_external(&mut self, addr: Multiaddr) {
        if self.external_addrs.contains(&addr) {
            return;
        }
        self.external_addrs.push(addr.clone());
        self.behaviour
            .on_swarm_event(FromSwarm::ExternalAddrConfirmed { addr: &addr });
        self.events
            .push_back(SwarmEvent::ExternalAddrConfirmed { address: addr });
    }

    pub(super) fn expire_external(&mut self, addr: &Multiaddr) -> bool {
        let Some(pos) = self.external_addrs.iter().position(|a| a == addr) else {
            return false;
        };
        let addr = self.external_addrs.remove(pos);
        self.behaviour
            .on_swarm_event(FromSwarm::ExternalAddrExpired { addr: &addr });
        self.events
            .push_back(SwarmEvent::ExternalAddrExpired { address: addr });
        true
    }

    pub(super) fn new_addr_of_peer(&mut self, peer: PeerId, addr: Multiaddr) {
        if peer == self.local_peer_id {
            return;
        }
        self.address_book.add(
            peer,
            addr.clone(),
            self.config.max_addresses_per_peer,
            self.config.max_address_book_peers,
        );
        self.behaviour
            .on_swarm_event(FromSwarm::NewExternalAddrOfPeer { peer, addr: &addr });
        self.events.push_back(SwarmEvent::NewExternalAddrOfPeer {
            peer_id: peer,
            address: addr,
        });
    }
}
