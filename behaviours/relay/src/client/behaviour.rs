//! [`Behaviour`]: the relay client's half inside the swarm. It owns every stream to relays:
//! reservations (made, renewed, dropped with their connection), circuit requests, and the
//! relays' stop requests delivering circuits to our listeners.

use std::collections::{HashMap, HashSet};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use meshwire_core::{ConnectionId, PeerId};
use meshwire_swarm::toolkit::{Connections, Outbox, Tasks, Timeout};
use meshwire_swarm::{
    ConnManagerCommand, ConnectionDenied, FromSwarm, InboundStream, NetworkBehaviour, OpenStream,
    OutboundStreamResult, StreamProtocol, Timer, ToSwarm,
};
use meshwire_transport::{ListenerId, Multiaddr};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::addr::{listen_addr, CircuitAddr};
use super::exchange::{self, Granted, StopOutcome};
use super::{Adopt, Circuit, CircuitError, Command, Config, Event, ListenViaError, ListenerEvent};
use crate::protocol::{Limit, Status, HOP_PROTOCOL, STOP_PROTOCOL};

const HOP: StreamProtocol = StreamProtocol::new(HOP_PROTOCOL);
const STOP: StreamProtocol = StreamProtocol::new(STOP_PROTOCOL);

/// The relay client inside the swarm; see the [module docs](super). Made by
/// [`client::new`](super::new) together with its [`Transport`](super::Transport).
pub struct Behaviour {
    local: PeerId,
    config: Config,
    commands: mpsc::Receiver<Command>,
    /// Listeners opened by [`Behaviour::listen_via`], handed to the transport.
    adopt: mpsc::Sender<Adopt>,
    listeners: HashMap<ListenerId, Listener>,
    /// Where to dial relays the transport named (for dials the swarm starts to reach them).
    relay_addrs: HashMap<PeerId, Multiaddr>,
    /// Relays we protect in the connection manager (those we hold a reservation on).
    protected: HashSet<PeerId>,
    outbox: Outbox<Event, Purpose>,
    /// Every exchange with relays. Its room is the sum of the shares of each kind, and each
    /// kind is kept within its share, so that no kind (a flood of stop streams, many dials)
    /// can starve another (the renewal of a reservation).
    tasks: Tasks<Key, Output>,
    /// Stop requests being answered (at most [`Config::max_stop_streams`]).
    stop_tasks: usize,
    /// Circuit requests waiting for their relay's answer (at most
    /// [`Config::max_pending_dials`]).
    connect_tasks: usize,
    /// Circuit requests waiting for their stream to the relay.
    dials_opening: usize,
    /// Fires at the earliest renewal due ([`Listener::renew_at`]).
    renew_timer: Timer,
    connections: Connections,
    next_task: u64,
}

struct Listener {
    relay: PeerId,
    relay_addr: Multiaddr,
    events: mpsc::Sender<ListenerEvent>,
    reservation: Option<Reservation>,
    /// A RESERVE exchange (first or renewal) is under way.
    requesting: bool,
    /// When to renew the reservation.
    renew_at: Option<Instant>,
}

struct Reservation {
    /// The connection the relay keeps it on.
    connection: ConnectionId,
    /// Seconds since the Unix epoch.
    expire: u64,
}

/// Why an outbound stream was asked for.
enum Purpose {
    Reserve(ListenerId),
    Connect {
        relay: PeerId,
        dst: PeerId,
        reply: oneshot::Sender<Result<Circuit, CircuitError>>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Reserve(ListenerId),
    Connect(u64),
    Stop(u64),
}

enum Output {
    Reserved {
        connection: ConnectionId,
        result: Result<Granted, CircuitError>,
    },
    Connected {
        relay: PeerId,
        dst: PeerId,
        result: Result<Option<Limit>, String>,
    },
    Stop {
        relay: PeerId,
        outcome: Result<StopOutcome, CircuitError>,
    },
}

/// The longest wait before a renewal, whatever expiry the relay names: one day.
const MAX_RENEW_SECS: u64 = 24 * 60 * 60;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Behaviour {
    pub(super) fn new(
        local: PeerId,
        commands: mpsc::Receiver<Command>,
        adopt: mpsc::Sender<Adopt>,
        config: Config,
    ) -> Self {
        // One RESERVE per listener, and each other kind within its own share.
        let tasks =
            Tasks::new(config.max_listeners + config.max_pending_dials + config.max_stop_streams);
        let outbox = Outbox::new(4 * config.max_listeners + config.max_pending_dials + 16);
        Behaviour {
            local,
            config,
            commands,
            adopt,
            listeners: HashMap::new(),
            relay_addrs: HashMap::new(),
            protected: HashSet::new(),
            outbox,
            tasks,
            stop_tasks: 0,
            connect_tasks: 0,
            dials_opening: 0,
            renew_timer: Timer::default(),
            connections: Connections::default(),
            next_task: 0,
        }
    }

    /// The reservations we hold now: each relay with its expiry (seconds since the Unix
    /// epoch), sorted by relay.
    pub fn reservations(&self) -> Vec<(PeerId, u64)> {
        let mut held: Vec<(PeerId, u64)> = self
            .listeners
            .values()
            .filter_map(|l| l.reservation.as_ref().map(|r| (l.relay, r.expire)))
            .collect();
        held.sort();
        held.dedup_by_key(|(relay, _)| *relay);
        held
    }

    /// Listens through the relay at `relay_addr` (`<address>/p2p/<relay>`, optionally
    /// followed by `/p2p-circuit`) without going through the swarm: what
    /// `swarm.listen_on(<relay_addr>/p2p-circuit)` does, for behaviours that pick relays
    /// themselves (auto relay). The listener is reported to the swarm by the client's
    /// transport like any other (`NewListenAddr` once the reservation is accepted,
    /// `ListenerClosed` when it ends, with a [`CircuitError`] as the reason).
    ///
    /// # Errors
    ///
    /// [`ListenViaError`].
    pub fn listen_via(&mut self, relay_addr: &Multiaddr) -> Result<ListenerId, ListenViaError> {
        let mut addr = relay_addr.clone();
        if !meshwire_transport::is_circuit_addr(&addr) {
            addr.push(meshwire_transport::Protocol::P2pCircuit);
        }
        let circuit = CircuitAddr::parse(&addr, None)
            .map_err(|_| ListenViaError::NotARelayAddress(relay_addr.clone()))?;
        if circuit.dst.is_some() || circuit.relay == self.local {
            return Err(ListenViaError::NotARelayAddress(relay_addr.clone()));
        }
        if self.listeners.len() >= self.config.max_listeners {
            return Err(ListenViaError::TooManyListeners {
                limit: self.config.max_listeners,
            });
        }
        let id = ListenerId::next();
        let (tx, rx) = mpsc::channel(self.config.max_pending_incoming.max(1));
        let (relay, relay_addr) = (circuit.relay, circuit.relay_addr.clone());
        self.adopt
            .try_send(Adopt {
                id,
                circuit,
                events: rx,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ListenViaError::ClientBusy,
                mpsc::error::TrySendError::Closed(_) => ListenViaError::ClientGone,
            })?;
        self.on_command(Command::Listen {
            id,
            relay,
            relay_addr,
            events: tx,
        });
        Ok(id)
    }

    /// Stops listener `id` (one of [`listen_via`](Self::listen_via) or of the swarm): its
    /// reservation is dropped and the swarm reports the listener closed. Returns whether it
    /// existed.
    pub fn stop_listening(&mut self, id: ListenerId) -> bool {
        let known = self.listeners.contains_key(&id);
        self.remove_listener(id, Ok(()));
        known
    }

    fn task_id(&mut self) -> u64 {
        self.next_task += 1;
        self.next_task
    }

    fn remember_relay_addr(&mut self, relay: PeerId, addr: Multiaddr) {
        let bound = self.config.max_listeners + self.config.max_pending_dials;
        if addr.is_empty() {
            return;
        }
        if self.relay_addrs.len() >= bound && !self.relay_addrs.contains_key(&relay) {
            // Make room: forget a relay no listener uses (its dials have long been made).
            let listened: HashSet<PeerId> = self.listeners.values().map(|l| l.relay).collect();
            let stale = self
                .relay_addrs
                .keys()
                .find(|r| !listened.contains(r))
                .copied();
            match stale {
                Some(r) => {
                    self.relay_addrs.remove(&r);
                }
                None => return,
            }
        }
        self.relay_addrs.insert(relay, addr);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Listen {
                id,
                relay,
                relay_addr,
                events,
            } => {
                self.remember_relay_addr(relay, relay_addr.clone());
                self.listeners.insert(
                    id,
                    Listener {
                        relay,
                        relay_addr,
                        events,
                        reservation: None,
                        requesting: false,
                        renew_at: None,
                    },
                );
                self.request_reservation(id);
            }
            Command::Unlisten { id } => self.remove_listener(id, Ok(())),
            Command::Dial {
                relay,
                relay_addr,
                dst,
                reply,
            } => {
                // Dials count from their arrival: waiting for a stream to the relay, then in
                // their CONNECT exchange.
                if self.dials_opening + self.connect_tasks >= self.config.max_pending_dials {
                    let _ = reply.send(Err(CircuitError::ClientBusy));
                    return;
                }
                self.remember_relay_addr(relay, relay_addr);
                let request = OpenStream::new(relay, HOP);
                match self
                    .outbox
                    .open_stream(request, Purpose::Connect { relay, dst, reply })
                {
                    Ok(_) => self.dials_opening += 1,
                    Err(e) => debug!(%relay, "relay client outbox full: {e}"),
                }
            }
        }
    }

    /// Opens a hop stream for a RESERVE (first or renewal) of listener `id`.
    fn request_reservation(&mut self, id: ListenerId) {
        let Some(l) = self.listeners.get_mut(&id) else {
            return;
        };
        if l.requesting {
            return;
        }
        l.requesting = true;
        let mut request = OpenStream::new(l.relay, HOP);
        if let Some(r) = &l.reservation {
            // A renewal goes on the connection the reservation lives on.
            request = request.on_connection(r.connection);
        }
        if self
            .outbox
            .open_stream(request, Purpose::Reserve(id))
            .is_err()
        {
            self.remove_listener(id, Err(CircuitError::ClientBusy));
        }
    }

    /// Closes listener `id` (telling its transport half why) and drops what it held.
    fn remove_listener(&mut self, id: ListenerId, reason: Result<(), CircuitError>) {
        let Some(l) = self.listeners.remove(&id) else {
            return;
        };
        if let Err(e) = &reason {
            debug!(relay = %l.relay, "relay listener closing: {e}");
        }
        let _ = l.events.try_send(ListenerEvent::Closed(reason));
        self.update_protection(l.relay);
    }

    /// Protects `relay` while some listener holds a reservation on it, and only then.
    fn update_protection(&mut self, relay: PeerId) {
        let reserved = self
            .listeners
            .values()
            .any(|l| l.relay == relay && l.reservation.is_some());
        let tag = self.config.protect_tag.clone();
        let command = match (reserved, self.protected.contains(&relay)) {
            (true, false) => {
                self.protected.insert(relay);
                ConnManagerCommand::Protect { peer: relay, tag }
            }
            (false, true) => {
                self.protected.remove(&relay);
                ConnManagerCommand::Unprotect { peer: relay, tag }
            }
            _ => return,
        };
        if self.outbox.push(ToSwarm::ConnManager(command)).is_err() {
            warn!(%relay, "relay client outbox full; protection change dropped");
        }
    }

    fn on_reserved(
        &mut self,
        id: ListenerId,
        connection: ConnectionId,
        result: Result<Granted, CircuitError>,
    ) {
        let Some(l) = self.listeners.get_mut(&id) else {
            return;
        };
        l.requesting = false;
        let relay = l.relay;
        // A grant that arrives after its connection closed holds nothing at the relay.
        let result = match result {
            Ok(_) if !self.connections.of(&relay).contains(&connection) => {
                Err(CircuitError::ConnectionLost { relay })
            }
            other => other,
        };
        let Some(l) = self.listeners.get_mut(&id) else {
            return;
        };
        let granted = match result {
            Ok(g) => g,
            Err(error) => {
                // The listener closes for the reason the reservation failed (a refusal, a bad
                // voucher, ...), which its `ListenerClosed` reports.
                self.remove_listener(id, Err(error.clone()));
                let _ = self.outbox.event(Event::ReservationFailed { relay, error });
                return;
            }
        };
        let renewal = l.reservation.is_some();
        l.reservation = Some(Reservation {
            connection,
            expire: granted.expire,
        });
        if !renewal {
            // Our address through the relay: at its own addresses, or where we reached it.
            let mut addrs: Vec<Multiaddr> = granted
                .addrs
                .iter()
                .map(|a| listen_addr(a, relay))
                .collect();
            if addrs.is_empty() {
                addrs.push(listen_addr(&l.relay_addr, relay));
            }
            for addr in addrs {
                if l.events.try_send(ListenerEvent::NewAddr(addr)).is_err() {
                    break;
                }
            }
        }
        // The relay's expiry is its word: bounded here, so that no value of it can overflow
        // the timer (a reservation is renewed at least once a day).
        let left = Duration::from_secs(
            granted
                .expire
                .saturating_sub(unix_now())
                .min(MAX_RENEW_SECS),
        );
        let early = left
            .mul_f64(self.config.renew_when_left.clamp(0.0, 1.0))
            .max(self.config.renew_margin);
        let renew_in = left.saturating_sub(early).max(Duration::from_secs(1));
        if let Some(l) = self.listeners.get_mut(&id) {
            l.renew_at = Instant::now().checked_add(renew_in);
        }
        self.update_protection(relay);
        let _ = self.outbox.event(Event::ReservationAccepted {
            relay,
            renewal,
            expire: granted.expire,
            limit: granted.limit,
        });
    }

    fn on_task(&mut self, key: Key, out: Result<Output, Timeout>) {
        match key {
            Key::Stop(_) => self.stop_tasks = self.stop_tasks.saturating_sub(1),
            Key::Connect(_) => self.connect_tasks = self.connect_tasks.saturating_sub(1),
            Key::Reserve(_) => {}
        }
        match (key, out) {
            (Key::Reserve(id), Ok(Output::Reserved { connection, result })) => {
                self.on_reserved(id, connection, result)
            }
            (Key::Reserve(id), Err(_)) => {
                if let Some(relay) = self.listeners.get(&id).map(|l| l.relay) {
                    self.on_reserved(
                        id,
                        ConnectionId::next(),
                        Err(CircuitError::Timeout { relay }),
                    )
                }
            }
            (_, Ok(Output::Connected { relay, dst, result })) => {
                let event = match result {
                    Ok(limit) => Event::OutboundCircuitEstablished { relay, dst, limit },
                    Err(error) => Event::OutboundCircuitFailed { relay, dst, error },
                };
                let _ = self.outbox.event(event);
            }
            (_, Ok(Output::Stop { relay, outcome })) => {
                let event = match outcome {
                    Ok(StopOutcome::Accepted { src, limit }) => {
                        Event::InboundCircuitEstablished { relay, src, limit }
                    }
                    Ok(StopOutcome::Denied(status)) => {
                        Event::InboundCircuitDenied { relay, status }
                    }
                    Err(e) => {
                        debug!(%relay, "stop stream failed: {e}");
                        return;
                    }
                };
                let _ = self.outbox.event(event);
            }
            // Connect and stop tasks answer within their own time limit.
            (_, _) => {}
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type Event = Event;

    fn protocols(&self) -> Vec<StreamProtocol> {
        vec![STOP]
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection: ConnectionId,
        peer: Option<PeerId>,
        _addresses: &[Multiaddr],
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer
            .and_then(|p| self.relay_addrs.get(&p))
            .cloned()
            .into_iter()
            .collect())
    }

    fn connection_keep_alive(&self, peer: PeerId, connection: ConnectionId) -> bool {
        self.listeners.values().any(|l| {
            l.relay == peer
                && l.reservation
                    .as_ref()
                    .is_some_and(|r| r.connection == connection)
        })
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.connections.on_swarm_event(&event);
        if let FromSwarm::ConnectionClosed {
            peer, connection, ..
        } = event
        {
            let lost: Vec<ListenerId> = self
                .listeners
                .iter()
                .filter(|(_, l)| {
                    l.relay == peer
                        && l.reservation
                            .as_ref()
                            .is_some_and(|r| r.connection == connection)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                self.remove_listener(id, Err(CircuitError::ConnectionLost { relay: peer }));
            }
        }
    }

    fn on_inbound_stream(&mut self, inbound: InboundStream) {
        let relay = inbound.peer;
        let mut stream = inbound.stream;
        // Only relays we listen through deliver circuits. Anyone else's stop stream is reset
        // unread, so that strangers cannot hold the room kept for our relays' requests.
        if !self.listeners.values().any(|l| l.relay == relay) {
            debug!(%relay, "stop stream from a peer we do not listen through; reset");
            stream.reset();
            let _ = self.outbox.event(Event::InboundCircuitDenied {
                relay,
                status: Status::NoReservation,
            });
            return;
        }
        if self.stop_tasks >= self.config.max_stop_streams {
            debug!(%relay, "stop stream dropped: {} being answered", self.stop_tasks);
            stream.reset();
            return;
        }
        // Any listener through this relay takes it, also one whose first RESERVE answer is
        // still being read: the relay sends stop requests only for reservations it granted, so
        // one may overtake our reading of the grant.
        let permit = self
            .listeners
            .values()
            .filter(|l| l.relay == relay)
            .find_map(|l| l.events.clone().try_reserve_owned().ok())
            .ok_or(Status::ResourceLimitExceeded);
        let n = self.task_id();
        let timeout = self.config.exchange_timeout;
        let fut = async move {
            let outcome =
                tokio::time::timeout(timeout, exchange::answer_stop(stream, relay, permit))
                    .await
                    .unwrap_or(Err(CircuitError::Timeout { relay }));
            Output::Stop { relay, outcome }
        };
        if self.tasks.try_push(Key::Stop(n), timeout * 2, fut).is_ok() {
            self.stop_tasks += 1;
        } else {
            // Not reached: stop tasks stay within their share of the room.
            debug!(%relay, "stop stream dropped: task limit reached");
        }
    }

    fn on_outbound_stream(&mut self, res: OutboundStreamResult) {
        let Some(purpose) = self.outbox.take_stream(res.id) else {
            return;
        };
        let relay = res.peer;
        let timeout = self.config.exchange_timeout;
        match purpose {
            Purpose::Reserve(id) => {
                let stream = match res.result {
                    Ok(s) => s,
                    Err(error) => {
                        if let Some(l) = self.listeners.get_mut(&id) {
                            l.requesting = false;
                        }
                        self.remove_listener(
                            id,
                            Err(CircuitError::RelayUnreachable {
                                relay,
                                error: error.clone(),
                            }),
                        );
                        let _ = self.outbox.event(Event::ReservationFailed {
                            relay,
                            error: CircuitError::RelayUnreachable { relay, error },
                        });
                        return;
                    }
                };
                let connection = stream.connection;
                let local = self.local;
                let fut = exchange::reserve(stream.stream, relay, local)
                    .map(move |result| Output::Reserved { connection, result });
                if self.tasks.try_push(Key::Reserve(id), timeout, fut).is_err() {
                    self.remove_listener(id, Err(CircuitError::ClientBusy));
                }
            }
            Purpose::Connect { relay, dst, reply } => {
                self.dials_opening = self.dials_opening.saturating_sub(1);
                let stream = match res.result {
                    Ok(s) => s.stream,
                    Err(error) => {
                        let e = CircuitError::RelayUnreachable { relay, error };
                        let _ = self.outbox.event(Event::OutboundCircuitFailed {
                            relay,
                            dst,
                            error: e.to_string(),
                        });
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                if self.connect_tasks >= self.config.max_pending_dials {
                    let e = CircuitError::ClientBusy;
                    let _ = self.outbox.event(Event::OutboundCircuitFailed {
                        relay,
                        dst,
                        error: e.to_string(),
                    });
                    let _ = reply.send(Err(e));
                    return;
                }
                let fut = async move {
                    let answer =
                        tokio::time::timeout(timeout, exchange::connect(stream, relay, dst))
                            .await
                            .unwrap_or(Err(CircuitError::Timeout { relay }));
                    let result = match answer {
                        Ok((stream, limit)) => {
                            let _ = reply.send(Ok(Circuit { stream }));
                            Ok(limit)
                        }
                        Err(e) => {
                            let text = e.to_string();
                            let _ = reply.send(Err(e));
                            Err(text)
                        }
                    };
                    Output::Connected { relay, dst, result }
                };
                let n = self.task_id();
                match self.tasks.try_push(Key::Connect(n), timeout * 2, fut) {
                    Ok(()) => self.connect_tasks += 1,
                    // Not reached: circuit requests stay within their share of the room.
                    Err(full) => debug!(%relay, %dst, "circuit request dropped: {full}"),
                }
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event>> {
        loop {
            if let Poll::Ready(command) = self.outbox.poll(cx) {
                return Poll::Ready(command);
            }
            if let Poll::Ready(command) = self.commands.poll_recv(cx) {
                match command {
                    Some(c) => self.on_command(c),
                    // The transport is gone: nothing more will be asked.
                    None => {
                        let ids: Vec<ListenerId> = self.listeners.keys().copied().collect();
                        for id in ids {
                            self.remove_listener(id, Ok(()));
                        }
                        return Poll::Pending;
                    }
                }
                continue;
            }
            // Listeners whose transport half was removed.
            let dropped: Vec<ListenerId> = self
                .listeners
                .iter()
                .filter(|(_, l)| l.events.is_closed())
                .map(|(id, _)| *id)
                .collect();
            if !dropped.is_empty() {
                for id in dropped {
                    self.remove_listener(id, Ok(()));
                }
                continue;
            }
            let renew_at = self.listeners.values().filter_map(|l| l.renew_at).min();
            if self.renew_timer.poll_at(renew_at, cx).is_ready() {
                let now = Instant::now();
                let due: Vec<ListenerId> = self
                    .listeners
                    .iter()
                    .filter(|(_, l)| l.renew_at.is_some_and(|t| t <= now))
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    if let Some(l) = self.listeners.get_mut(&id) {
                        l.renew_at = None;
                    }
                    self.request_reservation(id);
                }
                continue;
            }
            match self.tasks.poll_next(cx) {
                Poll::Ready((key, out)) => self.on_task(key, out),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
