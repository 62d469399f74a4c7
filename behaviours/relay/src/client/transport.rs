//! [`Transport`]: the relay client's half that the swarm drives as a transport. It turns
//! circuit addresses into requests to the client [`Behaviour`](super::Behaviour) (which owns
//! the streams to relays) and the circuits it gets back into Noise + Yamux connections.

use std::collections::HashMap;
use std::task::{Context, Poll};

use futures::FutureExt;
use meshwire_core::{Keypair, PeerId};
use meshwire_transport::upgrade::{upgrade_inbound, upgrade_outbound, UpgradeConfig};
use meshwire_transport::{
    ListenerId, Multiaddr, PendingConnection, TransportError, TransportEvent,
};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::addr::CircuitAddr;
use super::{Adopt, CircuitError, Command, ListenerEvent};

/// The relay client as a [`meshwire_transport::Transport`]: listens on
/// `<relay>/p2p-circuit` addresses (through a reservation the client behaviour makes) and
/// dials `<relay>/p2p-circuit/p2p/<peer>` addresses (through a circuit). Compose it with QUIC
/// with [`TransportExt::or_transport`](meshwire_transport::TransportExt::or_transport).
///
/// Made together with its behaviour by [`client::new`](super::new).
pub struct Transport {
    key: Keypair,
    upgrade: UpgradeConfig,
    commands: mpsc::Sender<Command>,
    /// Listeners the behaviour opened itself.
    adopt: mpsc::Receiver<Adopt>,
    listeners: HashMap<ListenerId, Listener>,
    /// Listeners in the order they are polled (rotated for fairness).
    order: Vec<ListenerId>,
    max_listeners: usize,
    listener_queue: usize,
}

struct Listener {
    circuit: CircuitAddr,
    events: mpsc::Receiver<ListenerEvent>,
    addrs: Vec<Multiaddr>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("relay::client::Transport")
            .field("peer", &self.key.peer_id())
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl Transport {
    pub(super) fn new(
        key: Keypair,
        upgrade: UpgradeConfig,
        commands: mpsc::Sender<Command>,
        adopt: mpsc::Receiver<Adopt>,
        max_listeners: usize,
        listener_queue: usize,
    ) -> Self {
        Transport {
            key,
            upgrade,
            commands,
            adopt,
            listeners: HashMap::new(),
            order: Vec::new(),
            max_listeners,
            listener_queue,
        }
    }

    fn send(&self, command: Command) -> Result<(), TransportError> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => other(CircuitError::ClientBusy),
            mpsc::error::TrySendError::Closed(_) => other(CircuitError::ClientGone),
        })
    }
}

fn other(e: CircuitError) -> TransportError {
    TransportError::Other(Box::new(e))
}

impl meshwire_transport::Transport for Transport {
    fn local_peer_id(&self) -> PeerId {
        self.key.peer_id()
    }

    fn listen_on(&mut self, addr: Multiaddr) -> Result<ListenerId, TransportError> {
        let circuit = CircuitAddr::parse(&addr, None)?;
        if circuit.dst.is_some() {
            return Err(TransportError::UnsupportedAddress {
                addr,
                reason: "listen on <relay>/p2p-circuit, without a destination peer",
            });
        }
        if circuit.relay == self.key.peer_id() {
            return Err(TransportError::UnsupportedAddress {
                addr,
                reason: "cannot listen through ourselves",
            });
        }
        if self.listeners.len() >= self.max_listeners {
            return Err(other(CircuitError::TooManyListeners {
                limit: self.max_listeners,
            }));
        }
        let id = ListenerId::next();
        let (tx, rx) = mpsc::channel(self.listener_queue.max(1));
        self.send(Command::Listen {
            id,
            relay: circuit.relay,
            relay_addr: circuit.relay_addr.clone(),
            events: tx,
        })?;
        self.listeners.insert(
            id,
            Listener {
                circuit,
                events: rx,
                addrs: Vec::new(),
            },
        );
        self.order.push(id);
        Ok(id)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        if self.listeners.remove(&id).is_none() {
            return false;
        }
        self.order.retain(|l| *l != id);
        // The behaviour also notices the dropped receiver; the command only makes it prompt.
        let _ = self.commands.try_send(Command::Unlisten { id });
        true
    }

    fn dial(
        &mut self,
        addr: &Multiaddr,
        expected: Option<PeerId>,
    ) -> Result<PendingConnection, TransportError> {
        let circuit = CircuitAddr::parse(addr, expected)?;
        let Some(dst) = circuit.dst else {
            return Err(TransportError::UnsupportedAddress {
                addr: addr.clone(),
                reason: "a circuit dial needs the destination: <relay>/p2p-circuit/p2p/<peer>",
            });
        };
        let (reply, answer) = oneshot::channel();
        self.send(Command::Dial {
            relay: circuit.relay,
            relay_addr: circuit.relay_addr.clone(),
            dst,
            reply,
        })?;
        let key = self.key.clone();
        let upgrade = self.upgrade.clone();
        let local_addr = circuit.listen_addr();
        let remote_addr = circuit.to_peer(dst);
        Ok(async move {
            let circuit = answer
                .await
                .map_err(|_| other(CircuitError::ClientGone))?
                .map_err(other)?;
            upgrade_outbound(
                circuit.stream,
                &key,
                Some(dst),
                local_addr,
                remote_addr,
                &upgrade,
            )
            .await
        }
        .boxed())
    }

    fn can_dial(&self, addr: &Multiaddr) -> bool {
        CircuitAddr::parse(addr, None).is_ok()
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listeners
            .values()
            .flat_map(|l| l.addrs.iter().cloned())
            .collect()
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        // Listeners the behaviour opened (auto relay): from now on like any other.
        while let Poll::Ready(Some(a)) = self.adopt.poll_recv(cx) {
            self.listeners.insert(
                a.id,
                Listener {
                    circuit: a.circuit,
                    events: a.events,
                    addrs: Vec::new(),
                },
            );
            self.order.push(a.id);
        }
        for i in 0..self.order.len() {
            let id = self.order[i];
            let Some(listener) = self.listeners.get_mut(&id) else {
                continue;
            };
            let event = match listener.events.poll_recv(cx) {
                Poll::Pending => continue,
                Poll::Ready(ev) => ev,
            };
            // The next poll starts after this listener.
            self.order.rotate_left(i + 1);
            return Poll::Ready(match event {
                Some(ListenerEvent::NewAddr(addr)) => {
                    if !listener.addrs.contains(&addr) {
                        listener.addrs.push(addr.clone());
                    }
                    TransportEvent::NewListenAddr { listener: id, addr }
                }
                Some(ListenerEvent::Incoming(circuit)) => {
                    let local_addr = listener.circuit.listen_addr();
                    let remote_addr = listener.circuit.to_peer(circuit.src);
                    let key = self.key.clone();
                    let upgrade = self.upgrade.clone();
                    let src = circuit.src;
                    let (l, r) = (local_addr.clone(), remote_addr.clone());
                    let upgrade = async move {
                        let conn = upgrade_inbound(circuit.stream, &key, l, r, &upgrade).await?;
                        if conn.peer_id() != src {
                            // The relay named one peer and another authenticated: refuse.
                            conn.close(0, "peer id does not match the relay's stop request");
                            return Err(TransportError::PeerIdMismatch {
                                expected: src,
                                actual: conn.peer_id(),
                            });
                        }
                        Ok(conn)
                    }
                    .boxed();
                    TransportEvent::Incoming {
                        listener: id,
                        local_addr,
                        remote_addr,
                        upgrade,
                    }
                }
                Some(ListenerEvent::Closed(reason)) => self.close_listener(id, reason),
                None => self.close_listener(id, Err(CircuitError::ClientGone)),
            });
        }
        Poll::Pending
    }
}

impl Transport {
    fn close_listener(
        &mut self,
        id: ListenerId,
        reason: Result<(), CircuitError>,
    ) -> TransportEvent {
        self.listeners.remove(&id);
        self.order.retain(|l| *l != id);
        debug!(?id, ?reason, "relay listener closed");
        TransportEvent::ListenerClosed {
            listener: id,
            reason: reason.map_err(other),
        }
    }
}
