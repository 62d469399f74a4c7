//! [`RelayServerEngine`]: reservations, circuits, limits and events of a relay server.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use meshwire_core::{ConnectionId, PeerId};

use super::config::{ConfigError, RateLimit, ServerConfig};
use super::rate_limit::{ip_key, Limited, RateLimiter};
use super::{
    CircuitEntry, CircuitId, ConnectAccepted, Refusal, ReservationEntry, ReserveAccepted,
    ServerEvent,
};
use crate::circuit::{CircuitEnd, CircuitEndReason, CircuitLimits};
use crate::metrics::RelayMetrics;
use crate::protocol::{Limit, Status};

/// Events kept for the driver at most; older ones are dropped (and logged) past it, so a
/// driver that never drains cannot grow the engine.
const MAX_QUEUED_EVENTS: usize = 1024;

/// A reservation held.
#[derive(Clone, Copy, Debug)]
struct Held {
    ip: Option<IpAddr>,
    /// [`ip_key`] of `ip`: what per-IP limits count.
    ip_key: Option<IpAddr>,
    expires: Instant,
    expire_unix: u64,
    /// Order of acceptance or renewal; the latest reservation of a peer serves its circuits.
    seq: u64,
}

/// A circuit admitted.
#[derive(Clone, Copy, Debug)]
struct Circuit {
    src: PeerId,
    src_connection: ConnectionId,
    dst: PeerId,
    dst_connection: ConnectionId,
    established: bool,
}

/// The per-peer and per-IP rate limiters of one kind of request.
#[derive(Debug)]
struct Limiters {
    peer: Option<RateLimiter<PeerId>>,
    ip: Option<RateLimiter<IpAddr>>,
}

impl Limiters {
    /// Takes a token from the peer's bucket, then (if the peer passed) the IP's.
    fn check(&mut self, now: Instant, peer: PeerId, ip: Option<IpAddr>) -> Result<(), Refusal> {
        if let Some(limiter) = self.peer.as_mut() {
            limiter
                .try_take(&peer, now)
                .map_err(|_: Limited| Refusal::PeerRateLimited)?;
        }
        if let (Some(limiter), Some(ip)) = (self.ip.as_mut(), ip) {
            limiter
                .try_take(&ip, now)
                .map_err(|_: Limited| Refusal::IpRateLimited)?;
        }
        Ok(())
    }
}

/// The sans-IO core of a circuit relay v2 server: admits reservations and circuits within
/// [`ServerConfig`]'s limits, times reservations out, counts, and reports
/// [`ServerEvent`]s. See the [module docs](super) for the driver's side.
///
/// Time comes in as `Instant`s; the UNIX time written in reservations and vouchers comes from
/// a clock function ([`RelayServerEngine::with_unix_clock`], the system clock by default).
pub struct RelayServerEngine {
    config: ServerConfig,
    unix_clock: Box<dyn Fn() -> u64 + Send>,
    metrics: Option<RelayMetrics>,
    reservations: HashMap<(PeerId, ConnectionId), Held>,
    /// Connections holding a reservation, per peer.
    by_peer: HashMap<PeerId, Vec<ConnectionId>>,
    /// Reservations per IP key.
    by_ip: HashMap<IpAddr, usize>,
    /// `(expires, peer, connection)` of every reservation, earliest first.
    expiries: BTreeSet<(Instant, PeerId, ConnectionId)>,
    reservation_limiters: Limiters,
    circuits: HashMap<CircuitId, Circuit>,
    /// Circuits each peer takes part in, as source or destination.
    circuits_by_peer: HashMap<PeerId, usize>,
    circuit_limiters: Limiters,
    next_circuit: u64,
    next_seq: u64,
    events: VecDeque<ServerEvent>,
}

impl fmt::Debug for RelayServerEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayServerEngine")
            .field("config", &self.config)
            .field("reservations", &self.reservations.len())
            .field("circuits", &self.circuits.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// Seconds since the UNIX epoch by the system clock (0 if the clock is before it).
fn system_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RelayServerEngine {
    /// An engine with `config`, reading UNIX time from the system clock.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the configuration cannot work ([`ServerConfig::validate`]).
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let limiters = |peer: Option<RateLimit>, ip: Option<RateLimit>| Limiters {
            peer: peer.map(|r| RateLimiter::new(r, config.rate_limiter_max_tracked)),
            ip: ip.map(|r| RateLimiter::new(r, config.rate_limiter_max_tracked)),
        };
        let reservation_limiters = limiters(
            config.reservation_rate_per_peer,
            config.reservation_rate_per_ip,
        );
        let circuit_limiters = limiters(config.circuit_rate_per_peer, config.circuit_rate_per_ip);
        Ok(RelayServerEngine {
            config,
            unix_clock: Box::new(system_unix_secs),
            metrics: None,
            reservations: HashMap::new(),
            by_peer: HashMap::new(),
            by_ip: HashMap::new(),
            expiries: BTreeSet::new(),
            reservation_limiters,
            circuits: HashMap::new(),
            circuits_by_peer: HashMap::new(),
            circuit_limiters,
            next_circuit: 0,
            next_seq: 0,
            events: VecDeque::new(),
        })
    }

    /// Reads UNIX seconds (for `expire_unix`) from `clock` instead of the system clock.
    pub fn with_unix_clock(mut self, clock: impl Fn() -> u64 + Send + 'static) -> Self {
        self.unix_clock = Box::new(clock);
        self
    }

    /// Keeps `metrics` up to date.
    pub fn with_metrics(mut self, metrics: RelayMetrics) -> Self {
        self.metrics = Some(metrics);
        self.update_gauges();
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The `limit` to send in hop `OK` responses and stop `CONNECT`s
    /// ([`ServerConfig::circuit_limit`]).
    pub fn circuit_limit(&self) -> Option<Limit> {
        self.config.circuit_limit()
    }

    /// The limits to bridge each circuit with ([`ServerConfig::circuit_limits`]).
    pub fn circuit_limits(&self) -> CircuitLimits {
        self.config.circuit_limits()
    }

    /// A `RESERVE` from `peer` on `connection`, connected from `ip` (`None` if the transport
    /// has no IP; per-IP limits then do not apply). Accepting renews the reservation held on
    /// the same connection, if any.
    ///
    /// # Errors
    ///
    /// The [`Refusal`]; answer with [`Refusal::status`].
    pub fn handle_reserve(
        &mut self,
        now: Instant,
        peer: PeerId,
        connection: ConnectionId,
        ip: Option<IpAddr>,
    ) -> Result<ReserveAccepted, Refusal> {
        match self.admit_reservation(now, peer, connection, ip) {
            Ok(accepted) => {
                tracing::debug!(%peer, %connection, renewed = accepted.renewed, "reservation accepted");
                if let Some(m) = &self.metrics {
                    m.reservation_accepted(accepted.renewed);
                }
                let expire_unix = accepted.expire_unix;
                self.push_event(if accepted.renewed {
                    ServerEvent::ReservationRenewed {
                        peer,
                        connection,
                        expire_unix,
                    }
                } else {
                    ServerEvent::ReservationAccepted {
                        peer,
                        connection,
                        expire_unix,
                    }
                });
                self.update_gauges();
                Ok(accepted)
            }
            Err(refusal) => {
                tracing::debug!(%peer, %connection, %refusal, "reservation refused");
                if let Some(m) = &self.metrics {
                    m.reservation_refused(refusal.as_str());
                }
                self.push_event(ServerEvent::ReservationRefused {
                    peer,
                    connection,
                    refusal,
                });
                Err(refusal)
            }
        }
    }

    fn admit_reservation(
        &mut self,
        now: Instant,
        peer: PeerId,
        connection: ConnectionId,
        ip: Option<IpAddr>,
    ) -> Result<ReserveAccepted, Refusal> {
        if let Some(access) = &self.config.access {
            if !access.allow_reserve(&peer, ip) {
                return Err(Refusal::PermissionDenied);
            }
        }
        let key = (peer, connection);
        let renewed = self.reservations.contains_key(&key);
        let ip_key = ip.map(ip_key);
        if !renewed {
            if self.reservations.len() >= self.config.max_reservations {
                return Err(Refusal::MaxReservations);
            }
            let held_by_peer = self.by_peer.get(&peer).map_or(0, Vec::len);
            if held_by_peer >= self.config.max_reservations_per_peer {
                return Err(Refusal::MaxReservationsPerPeer);
            }
            if let (Some(max), Some(k)) = (self.config.max_reservations_per_ip, ip_key) {
                if self.by_ip.get(&k).copied().unwrap_or(0) >= max {
                    return Err(Refusal::MaxReservationsPerIp);
                }
            }
        }
        self.reservation_limiters.check(now, peer, ip_key)?;

        let duration = self.config.reservation_duration;
        let expires = now + duration;
        let expire_unix = (self.unix_clock)().saturating_add(duration.as_secs());
        let seq = self.next_seq;
        self.next_seq += 1;
        let held = Held {
            ip,
            ip_key,
            expires,
            expire_unix,
            seq,
        };
        if let Some(old) = self.reservations.insert(key, held) {
            self.expiries.remove(&(old.expires, peer, connection));
        } else {
            self.by_peer.entry(peer).or_default().push(connection);
            if let Some(k) = ip_key {
                *self.by_ip.entry(k).or_default() += 1;
            }
        }
        self.expiries.insert((expires, peer, connection));
        Ok(ReserveAccepted {
            expire_unix,
            renewed,
        })
    }

    /// Forgets the reservation of `(peer, connection)`; whether there was one.
    fn remove_reservation(&mut self, peer: PeerId, connection: ConnectionId) -> bool {
        let Some(held) = self.reservations.remove(&(peer, connection)) else {
            return false;
        };
        self.expiries.remove(&(held.expires, peer, connection));
        if let Some(conns) = self.by_peer.get_mut(&peer) {
            conns.retain(|c| *c != connection);
            if conns.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
        if let Some(k) = held.ip_key {
            if let Some(n) = self.by_ip.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.by_ip.remove(&k);
                }
            }
        }
        true
    }

    /// A `CONNECT` from `src` (on `src_connection`, from `src_ip`) to `dst`. Admitted, the
    /// circuit holds its slots until [`RelayServerEngine::handle_circuit_closed`].
    ///
    /// # Errors
    ///
    /// The [`Refusal`]; answer with [`Refusal::status`].
    pub fn handle_connect(
        &mut self,
        now: Instant,
        src: PeerId,
        src_connection: ConnectionId,
        src_ip: Option<IpAddr>,
        dst: PeerId,
    ) -> Result<ConnectAccepted, Refusal> {
        match self.admit_circuit(now, src, src_connection, src_ip, dst) {
            Ok(accepted) => {
                tracing::debug!(%src, %dst, id = %accepted.id, "circuit admitted");
                self.update_gauges();
                Ok(accepted)
            }
            Err(refusal) => {
                tracing::debug!(%src, %dst, %refusal, "circuit refused");
                self.circuit_refused(None, src, dst, refusal);
                Err(refusal)
            }
        }
    }

    fn admit_circuit(
        &mut self,
        now: Instant,
        src: PeerId,
        src_connection: ConnectionId,
        src_ip: Option<IpAddr>,
        dst: PeerId,
    ) -> Result<ConnectAccepted, Refusal> {
        if let Some(access) = &self.config.access {
            if !access.allow_connect(&src, src_ip, &dst) {
                return Err(Refusal::PermissionDenied);
            }
        }
        if self.circuits.len() >= self.config.max_circuits {
            return Err(Refusal::MaxCircuits);
        }
        let max_per_peer = self.config.max_circuits_per_peer;
        let busy = |peer: &PeerId| self.circuits_by_peer.get(peer).copied().unwrap_or(0);
        // With src == dst the circuit counts twice for the one peer.
        let needed = if src == dst { 2 } else { 1 };
        if busy(&src) + needed > max_per_peer || busy(&dst) + needed > max_per_peer {
            return Err(Refusal::MaxCircuitsPerPeer);
        }
        self.circuit_limiters.check(now, src, src_ip.map(ip_key))?;
        let dst_connection = self
            .by_peer
            .get(&dst)
            .into_iter()
            .flatten()
            .filter_map(|c| Some((*c, self.reservations.get(&(dst, *c))?)))
            .filter(|(_, held)| held.expires > now)
            .max_by_key(|(_, held)| held.seq)
            .map(|(c, _)| c)
            .ok_or(Refusal::NoReservation)?;

        let id = CircuitId(self.next_circuit);
        self.next_circuit += 1;
        self.circuits.insert(
            id,
            Circuit {
                src,
                src_connection,
                dst,
                dst_connection,
                established: false,
            },
        );
        *self.circuits_by_peer.entry(src).or_default() += 1;
        *self.circuits_by_peer.entry(dst).or_default() += 1;
        Ok(ConnectAccepted { id, dst_connection })
    }

    /// The destination accepted circuit `id` and the source was told `OK`: it relays now.
    /// Returns whether `id` was a circuit being set up.
    pub fn handle_circuit_established(&mut self, id: CircuitId) -> bool {
        let Some(circuit) = self.circuits.get_mut(&id) else {
            return false;
        };
        if circuit.established {
            return false;
        }
        circuit.established = true;
        let (src, dst) = (circuit.src, circuit.dst);
        tracing::debug!(%src, %dst, %id, "circuit relaying");
        if let Some(m) = &self.metrics {
            m.circuits_opened.inc();
        }
        self.push_event(ServerEvent::CircuitAccepted { id, src, dst });
        true
    }

    /// Circuit `id` ended (or never started: [`CircuitEnd::stop_refused`]); its slots are
    /// free. A circuit that was not yet established counts as refused by the destination
    /// (with the status of [`CircuitEndReason::StopRefused`], else `CONNECTION_FAILED`).
    /// Returns whether `id` was known.
    pub fn handle_circuit_closed(&mut self, id: CircuitId, end: CircuitEnd) -> bool {
        let Some(circuit) = self.circuits.remove(&id) else {
            return false;
        };
        for peer in [circuit.src, circuit.dst] {
            if let Some(n) = self.circuits_by_peer.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    self.circuits_by_peer.remove(&peer);
                }
            }
        }
        let (src, dst) = (circuit.src, circuit.dst);
        if circuit.established {
            tracing::debug!(%src, %dst, %id, reason = end.reason.as_str(),
                a_to_b = end.bytes_a_to_b, b_to_a = end.bytes_b_to_a, "circuit closed");
            if let Some(m) = &self.metrics {
                m.circuit_closed(end.reason.as_str(), end.total_bytes());
            }
            self.push_event(ServerEvent::CircuitClosed { id, src, dst, end });
        } else {
            let status = match end.reason {
                CircuitEndReason::StopRefused(status) => status,
                _ => Status::ConnectionFailed,
            };
            tracing::debug!(%src, %dst, %id, %status, "circuit refused by the destination");
            if let Some(m) = &self.metrics {
                // Bytes cannot have been relayed before establishment, but count what the
                // driver reports.
                m.bytes_relayed.inc_by(end.total_bytes());
            }
            self.circuit_refused(Some(id), src, dst, Refusal::Destination(status));
        }
        self.update_gauges();
        true
    }

    fn circuit_refused(&mut self, id: Option<CircuitId>, src: PeerId, dst: PeerId, r: Refusal) {
        if let Some(m) = &self.metrics {
            m.circuit_refused(r.as_str());
        }
        self.push_event(ServerEvent::CircuitRefused {
            id,
            src,
            dst,
            refusal: r,
        });
    }

    /// `connection` of `peer` closed: its reservation ends. Returns the circuits whose hop or
    /// stop stream ran on it; they fail with it, and the driver reports each with
    /// [`RelayServerEngine::handle_circuit_closed`] as usual (the engine keeps them until
    /// then).
    pub fn handle_connection_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Vec<CircuitId> {
        if self.remove_reservation(peer, connection) {
            tracing::debug!(%peer, %connection, "reservation closed with its connection");
            if let Some(m) = &self.metrics {
                m.reservation_ended("connection_closed");
            }
            self.push_event(ServerEvent::ReservationClosed { peer, connection });
            self.update_gauges();
        }
        let mut affected: Vec<CircuitId> = self
            .circuits
            .iter()
            .filter(|(_, c)| {
                (c.src == peer && c.src_connection == connection)
                    || (c.dst == peer && c.dst_connection == connection)
            })
            .map(|(id, _)| *id)
            .collect();
        affected.sort();
        affected
    }

    /// Ends the reservations due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(expires, peer, connection)) = self.expiries.first() {
            if expires > now {
                break;
            }
            self.remove_reservation(peer, connection);
            tracing::debug!(%peer, %connection, "reservation timed out");
            if let Some(m) = &self.metrics {
                m.reservation_ended("timed_out");
            }
            self.push_event(ServerEvent::ReservationTimedOut { peer, connection });
        }
        self.update_gauges();
    }

    /// When [`RelayServerEngine::handle_timeout`] is next due: the earliest reservation end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _, _)| *t)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Whether `peer` holds a reservation (on any connection).
    pub fn has_reservation(&self, peer: &PeerId) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// The reservations held, in no particular order.
    pub fn reservations(&self) -> impl Iterator<Item = ReservationEntry> + '_ {
        self.reservations
            .iter()
            .map(|(&(peer, connection), held)| ReservationEntry {
                peer,
                connection,
                ip: held.ip,
                expires: held.expires,
                expire_unix: held.expire_unix,
            })
    }

    /// The circuits being set up or relaying, in no particular order.
    pub fn circuits(&self) -> impl Iterator<Item = CircuitEntry> + '_ {
        self.circuits.iter().map(|(&id, c)| CircuitEntry {
            id,
            src: c.src,
            src_connection: c.src_connection,
            dst: c.dst,
            dst_connection: c.dst_connection,
            established: c.established,
        })
    }

    /// Reservations held.
    pub fn reservation_count(&self) -> usize {
        self.reservations.len()
    }

    /// Circuits being set up or relaying.
    pub fn circuit_count(&self) -> usize {
        self.circuits.len()
    }

    fn push_event(&mut self, event: ServerEvent) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            tracing::warn!("relay server events not drained; dropping the oldest");
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn update_gauges(&self) {
        if let Some(m) = &self.metrics {
            m.reservations.set(self.reservations.len() as i64);
            m.circuits.set(self.circuits.len() as i64);
        }
    }
}
