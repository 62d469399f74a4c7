//! [`NatTraversal`]: the [`Connector`] with a [`NatDetector`] feeding it our NAT profile.
//!
//! The connector chooses DCUtR, port prediction, the birthday spray or the relay from both
//! peers' profiles; ours comes from the detector (`/meshwire/natprobe/1.0.0` against the
//! configured observers, `docs/natprobe.md`). `NatTraversal` runs both and keeps the
//! connector's profile equal to the detector's current one: set when a detection reports,
//! cleared when the local addresses change to a network the detector has not classified yet
//! (the connector then falls back to DCUtR, as with an unknown profile) or when the profile
//! passes the cache's maximum age, restored from the detector's cache when the node returns
//! to a known network. The check runs on every poll (no detector event is needed), and the
//! detector's `SharedNatProfile` is kept equal to it.

use std::task::{Context, Poll};

use meshwire_core::{ConnectionId, PeerId};
use meshwire_nat::{DetectorEvent, NatDetector, NatProfile};
use meshwire_swarm::{
    ConnectionDenied, FromSwarm, InboundStream, Multiaddr, NetworkBehaviour, OutboundStreamResult,
    StreamProtocol, ToSwarm,
};

use super::behaviour::{Connector, ConnectorEvent};

/// The route index of the connector's stream requests.
const CONNECTOR: u16 = 0;
/// The route index of the detector's stream requests.
const DETECTOR: u16 = 1;

/// What [`NatTraversal`] reports.
#[derive(Clone, Debug)]
pub enum TraversalEvent {
    /// The detector's report. A `Detected` profile is already the connector's.
    Nat(DetectorEvent),
    /// The connector's report (a session's outcome).
    Connector(ConnectorEvent),
}

/// The [`Connector`] and a [`NatDetector`] in one behaviour; the detector's profile becomes
/// the connector's local profile by itself (module docs).
///
/// ```
/// use meshwire_holepunch::{Connector, ConnectorConfig, NatTraversal};
/// use meshwire_nat::{DetectorConfig, NatDetector};
/// use meshwire_swarm::NetworkBehaviour;
/// use meshwire_transport::quic::{QuicConfig, QuicTransport};
///
/// let quic = QuicTransport::new(meshwire_core::Keypair::generate(), QuicConfig::default()).unwrap();
/// let connector = Connector::new(ConnectorConfig::default(), quic.sockets());
/// // Observers: probe servers (`meshwire_nat::Observer`), none here.
/// let traversal = NatTraversal::new(connector, Some(NatDetector::new(DetectorConfig::default())));
/// assert_eq!(traversal.nat_profile(), None); // nothing detected yet
/// assert!(traversal.protocols().contains(&meshwire_holepunch::SPRAY_PROTOCOL));
/// ```
pub struct NatTraversal {
    connector: Connector,
    detector: Option<NatDetector>,
    /// The detector's shared handle, kept current with the connector's profile.
    shared: Option<meshwire_nat::SharedNatProfile>,
}

impl NatTraversal {
    /// `connector` fed by `detector` (`None`: the profile is set by hand through
    /// [`NatTraversal::connector_mut`], as with a bare connector).
    pub fn new(connector: Connector, detector: Option<NatDetector>) -> Self {
        let shared = detector.as_ref().map(NatDetector::shared_profile);
        let mut t = NatTraversal {
            connector,
            detector,
            shared,
        };
        t.sync_profile();
        t
    }

    /// The connector.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// The connector, to cancel a session or record peers' addresses.
    pub fn connector_mut(&mut self) -> &mut Connector {
        &mut self.connector
    }

    /// The detector, if there is one.
    pub fn detector(&self) -> Option<&NatDetector> {
        self.detector.as_ref()
    }

    /// The detector, to start a detection now ([`NatDetector::refresh`]).
    pub fn detector_mut(&mut self) -> Option<&mut NatDetector> {
        self.detector.as_mut()
    }

    /// The detector's profile as a handle other behaviours read (the relay registry's
    /// `with_nat_profile`); `None` without a detector.
    pub fn shared_profile(&self) -> Option<meshwire_nat::SharedNatProfile> {
        self.shared.clone()
    }

    /// Our NAT profile as the connector uses it (the detector's current one, fresh or
    /// stale while a refresh runs).
    pub fn nat_profile(&self) -> Option<NatProfile> {
        self.connector.local_profile()
    }

    /// Gives the connector (and the detector's shared handle) the detector's current
    /// profile (no detector: leaves it).
    fn sync_profile(&mut self) {
        if let Some(d) = &self.detector {
            let profile = d.nat_profile();
            if let Some(shared) = &self.shared {
                shared.set(profile);
            }
            if profile != self.connector.local_profile() {
                tracing::debug!(?profile, "nat traversal: local NAT profile");
                self.connector.set_local_profile(profile);
            }
        }
    }
}

impl NetworkBehaviour for NatTraversal {
    type Event = TraversalEvent;

    fn protocols(&self) -> Vec<StreamProtocol> {
        let mut p = self.connector.protocols();
        if let Some(d) = &self.detector {
            for q in d.protocols() {
                if !p.contains(&q) {
                    p.push(q);
                }
            }
        }
        p
    }

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.connector
            .handle_pending_inbound_connection(connection, local_addr, remote_addr)?;
        match &mut self.detector {
            Some(d) => d.handle_pending_inbound_connection(connection, local_addr, remote_addr),
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
        self.connector.handle_established_inbound_connection(
            connection,
            peer,
            local_addr,
            remote_addr,
        )?;
        match &mut self.detector {
            Some(d) => {
                d.handle_established_inbound_connection(connection, peer, local_addr, remote_addr)
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
        let mut extra = self
            .connector
            .handle_pending_outbound_connection(connection, peer, addresses)?;
        if let Some(d) = &mut self.detector {
            extra.extend(d.handle_pending_outbound_connection(connection, peer, addresses)?);
        }
        Ok(extra)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.connector
            .handle_established_outbound_connection(connection, peer, addr)?;
        match &mut self.detector {
            Some(d) => d.handle_established_outbound_connection(connection, peer, addr),
            None => Ok(()),
        }
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        self.connector.connection_keep_alive(peer, connection)
            || self
                .detector
                .as_ref()
                .is_some_and(|d| d.connection_keep_alive(peer, connection))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.connector.on_swarm_event(event);
        if let Some(d) = &mut self.detector {
            d.on_swarm_event(event);
        }
        if matches!(
            event,
            FromSwarm::NewListenAddr { .. } | FromSwarm::ListenerClosed { .. }
        ) {
            // Another network: its cached profile, or none until detected.
            self.sync_profile();
        }
    }

    fn on_inbound_stream(&mut self, stream: InboundStream) {
        match &mut self.detector {
            Some(d) if d.protocols().contains(&stream.protocol) => d.on_inbound_stream(stream),
            _ => self.connector.on_inbound_stream(stream),
        }
    }

    fn on_outbound_stream(&mut self, mut result: OutboundStreamResult) {
        match result.route.pop() {
            Some(CONNECTOR) => self.connector.on_outbound_stream(result),
            Some(DETECTOR) => {
                if let Some(d) = &mut self.detector {
                    d.on_outbound_stream(result);
                }
            }
            // Not ours: dropping the stream resets it.
            _ => {}
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::Event>> {
        // The detector's profile can change without an event (an entry past its maximum
        // age, an event the detector's full outbox dropped): follow it on every poll.
        self.sync_profile();
        if let Poll::Ready(command) = self.connector.poll(cx) {
            return Poll::Ready(
                command
                    .map_event(TraversalEvent::Connector)
                    .push_route(CONNECTOR),
            );
        }
        let Some(d) = &mut self.detector else {
            return Poll::Pending;
        };
        match d.poll(cx) {
            Poll::Ready(command) => {
                let command = command.push_route(DETECTOR);
                match command.into_event() {
                    Ok(event) => {
                        self.sync_profile();
                        Poll::Ready(ToSwarm::GenerateEvent(TraversalEvent::Nat(event)))
                    }
                    Err(command) => Poll::Ready(command),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
