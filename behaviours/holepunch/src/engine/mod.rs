//! The sans-IO DCUtR engine: who punches when, how many times, and how each attempt ends.
//!
//! One session per remote peer, started by a relayed connection. The roles follow libp2p's
//! DCUtR (`relay/DCUtR.md`; rust-libp2p's `libp2p-dcutr` does the same):
//!
//! * **Initiator** — the peer that *accepted* the relayed connection (it was reached through
//!   its reservation; [`Role::Initiator`]). It opens a `/libp2p/dcutr` stream on the relayed
//!   connection, sends `CONNECT` with its addresses, measures the round trip until the
//!   remote's `CONNECT` arrives, sends `SYNC` and dials the remote's addresses after the
//!   attempt's [`DialTiming`] (half the round trip for the first attempt, as the spec says).
//! * **Responder** — the peer that *dialed* the relayed connection ([`Role::Responder`]). It
//!   answers the stream: reads `CONNECT`, sends its own, reads `SYNC` and dials at once.
//!
//! Both dial from their listening socket (meshwire's QUIC transport dials from the listening
//! endpoint), so the packets of both sides open NAT mappings for each other and one of the
//! handshakes gets through: a QUIC simultaneous open. An attempt succeeds when **any** direct
//! (non-relayed) connection to the peer is established while it runs, whichever side dialed.
//!
//! From the second attempt on, both sides also dial a window of ports after each public
//! address of the remote ([`HolepunchConfig::port_windows`], [`with_predicted_ports`]): the
//! mapping a sequential symmetric NAT made towards us.
//!
//! An attempt fails when the stream exchange fails, when our dial fails, or when no direct
//! connection appeared within [`HolepunchConfig::attempt_timeout`] of the dial. The initiator
//! then starts the next attempt on a new stream, up to [`HolepunchConfig::max_attempts`]
//! (3, as rust-libp2p); the responder waits [`HolepunchConfig::responder_wait`] for the next
//! `CONNECT`. A session can be cancelled at any time ([`HolepunchEngine::cancel`]); a dial
//! already handed to the swarm then completes, but no longer counts.
//!
//! Every attempt ends with one [`HolepunchEvent::AttemptFinished`] carrying an
//! [`AttemptOutcome`]; every session ends with one
//! [`HolepunchEvent::DirectConnectionUpgradeSucceeded`] or
//! [`HolepunchEvent::DirectConnectionUpgradeFailed`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use meshwire_core::{ConnectionId, PeerId};
//! use meshwire_holepunch::engine::*;
//!
//! let mut engine = HolepunchEngine::new(HolepunchConfig::default());
//! let now = Instant::now();
//! let (peer, relayed) = (PeerId::random(), ConnectionId::next());
//! engine.handle_relayed_connection(now, peer, relayed, Role::Initiator, false);
//! // The behaviour opens a stream and runs CONNECT/CONNECT/SYNC on it...
//! let Some(Action::OpenStream { attempt: 1, .. }) = engine.poll_action() else { panic!() };
//! let addrs = vec!["/ip4/192.0.2.1/udp/4001/quic-v1".parse().unwrap()];
//! engine.handle_exchange_succeeded(now, peer, 1, addrs, Some(Duration::from_millis(40)));
//! // ...and dials half a round trip after SYNC.
//! assert_eq!(engine.poll_timeout(), Some(now + Duration::from_millis(20)));
//! engine.handle_timeout(now + Duration::from_millis(20));
//! let Some(Action::Dial { attempt: 1, .. }) = engine.poll_action() else { panic!() };
//! engine.handle_dial_issued(peer, ConnectionId::next());
//! let direct = ConnectionId::next();
//! engine.handle_direct_connection(now + Duration::from_millis(60), peer, direct);
//! assert!(matches!(engine.poll_event(), Some(HolepunchEvent::AttemptFinished { outcome: AttemptOutcome::Succeeded, .. })));
//! assert!(matches!(
//!     engine.poll_event(),
//!     Some(HolepunchEvent::DirectConnectionUpgradeSucceeded { attempts: 1, .. })
//! ));
//! ```

mod predict;
#[cfg(test)]
mod tests;

pub use predict::with_predicted_ports;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use meshwire_core::{ConnectionId, PeerId};
use multiaddr::Multiaddr;

/// Which side of DCUtR we are on a relayed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// We accepted the relayed connection: we open the stream, measure the RTT and send
    /// `SYNC`.
    Initiator,
    /// We dialed the relayed connection: we answer the stream and dial on `SYNC`.
    Responder,
}

impl Role {
    /// `"initiator"` or `"responder"` (metric labels, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Initiator => "initiator",
            Role::Responder => "responder",
        }
    }
}

/// When the initiator dials after sending `SYNC`, per attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialTiming {
    /// Half the measured round trip: both sides' first packets cross at the NATs (the
    /// spec's timing).
    HalfRtt,
    /// A full round trip: the responder's packets have surely left its NAT first, for paths
    /// where the relayed round trip under-estimates the direct one.
    FullRtt,
    /// At once: our mapping exists before the responder's packets arrive.
    Immediate,
}

impl DialTiming {
    /// The delay after `SYNC` for a measured `rtt`.
    pub fn delay(self, rtt: Duration) -> Duration {
        match self {
            DialTiming::HalfRtt => rtt / 2,
            DialTiming::FullRtt => rtt,
            DialTiming::Immediate => Duration::ZERO,
        }
    }
}

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct HolepunchConfig {
    /// Attempts per session (default 3, as rust-libp2p).
    pub max_attempts: u8,
    /// Time for one stream exchange (CONNECT, CONNECT, SYNC) (default 10 s, as rust-libp2p).
    pub exchange_timeout: Duration,
    /// Time after our dial within which a direct connection must appear (default 8 s: over
    /// QUIC's 5 s handshake timeout, so the remote's handshake can finish too).
    pub attempt_timeout: Duration,
    /// How long a responder whose attempt failed waits for the next `CONNECT` before the
    /// session fails (default 15 s).
    pub responder_wait: Duration,
    /// The initiator's dial timing of attempt `n` is `timings[min(n, len) - 1]` (default
    /// half RTT, full RTT, immediate: each retry changes strategy).
    pub timings: Vec<DialTiming>,
    /// Port prediction window of attempt `n`, `port_windows[min(n, len) - 1]`, both roles:
    /// each public address of the remote is also dialed with the next that many ports
    /// ([`with_predicted_ports`]), for a sequential symmetric NAT (default 0, 5, 5: plain
    /// DCUtR first, then the window).
    pub port_windows: Vec<u16>,
    /// Addresses dialed in one attempt, predicted ports included (default 16).
    pub max_dial_addrs: usize,
    /// Sessions at once; relayed connections beyond it are not upgraded (default 256).
    pub max_sessions: usize,
    /// Whether the behaviour starts an initiator's session by itself on every relayed
    /// connection it accepted (default `true`, as rust-libp2p). `false`: it waits for
    /// `Behaviour::start` (the [`Connector`](crate::Connector) decides first); responder
    /// sessions, which only answer, start by themselves either way. The engine ignores it.
    pub automatic: bool,
}

impl Default for HolepunchConfig {
    fn default() -> Self {
        HolepunchConfig {
            max_attempts: 3,
            exchange_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(8),
            responder_wait: Duration::from_secs(15),
            timings: vec![
                DialTiming::HalfRtt,
                DialTiming::FullRtt,
                DialTiming::Immediate,
            ],
            port_windows: vec![0, 5, 5],
            max_dial_addrs: 16,
            max_sessions: 256,
            automatic: true,
        }
    }
}

impl HolepunchConfig {
    /// The port prediction window of attempt `attempt` (1-based).
    pub fn port_window(&self, attempt: u8) -> u16 {
        let i = usize::from(attempt.max(1)) - 1;
        self.port_windows
            .get(i.min(self.port_windows.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    }

    /// The initiator's dial timing of attempt `attempt` (1-based).
    pub fn timing(&self, attempt: u8) -> DialTiming {
        let i = usize::from(attempt.max(1)) - 1;
        self.timings
            .get(i.min(self.timings.len().saturating_sub(1)))
            .copied()
            .unwrap_or(DialTiming::HalfRtt)
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttemptOutcome {
    /// A direct connection to the peer was established.
    #[error("direct connection established")]
    Succeeded,
    /// The stream exchange failed (I/O, timeout or a protocol violation).
    #[error("exchange failed: {0}")]
    ExchangeFailed(String),
    /// The remote does not speak `/libp2p/dcutr`.
    #[error("remote does not support /libp2p/dcutr")]
    Unsupported,
    /// The remote sent no address we could dial.
    #[error("remote sent no dialable address")]
    NoAddresses,
    /// Our dial failed and no direct connection appeared.
    #[error("dial failed: {0}")]
    DialFailed(String),
    /// No direct connection within the attempt timeout.
    #[error("no direct connection within the attempt timeout")]
    TimedOut,
    /// Responder: the initiator started its next attempt before this one ended.
    #[error("superseded by the initiator's next attempt")]
    Superseded,
    /// Cancelled by the application.
    #[error("cancelled")]
    Cancelled,
    /// The relayed connection closed during the attempt.
    #[error("relayed connection closed")]
    RelayedConnectionClosed,
}

impl AttemptOutcome {
    /// A short label (metrics).
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::ExchangeFailed(_) => "exchange_failed",
            AttemptOutcome::Unsupported => "unsupported",
            AttemptOutcome::NoAddresses => "no_addresses",
            AttemptOutcome::DialFailed(_) => "dial_failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Superseded => "superseded",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::RelayedConnectionClosed => "relayed_closed",
        }
    }

    /// Whether another attempt may help (a failed dial or a timeout); the others end the
    /// session.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::DialFailed(_)
                | AttemptOutcome::TimedOut
                | AttemptOutcome::Superseded
                | AttemptOutcome::ExchangeFailed(_)
        )
    }
}

/// Why a session ended without a direct connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// Every attempt failed; the last outcome.
    #[error("gave up after {attempts} attempts: {last}")]
    AttemptsExceeded {
        /// Attempts made.
        attempts: u8,
        /// How the last one ended.
        last: AttemptOutcome,
    },
    /// An attempt ended in a way another attempt cannot fix.
    #[error("{0}")]
    Aborted(AttemptOutcome),
    /// A responder's attempt failed and the initiator did not try again in time.
    #[error("the initiator did not retry after {attempts} attempts (last: {last})")]
    NoRetry {
        /// Attempts made.
        attempts: u8,
        /// How the last one ended.
        last: AttemptOutcome,
    },
}

/// What the engine reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HolepunchEvent {
    /// One attempt ended.
    AttemptFinished {
        /// The remote.
        peer: PeerId,
        /// Our role.
        role: Role,
        /// 1-based.
        attempt: u8,
        /// How it ended.
        outcome: AttemptOutcome,
        /// From the start of the attempt.
        elapsed: Duration,
    },
    /// A direct connection replaced the relayed one.
    DirectConnectionUpgradeSucceeded {
        /// The remote.
        peer: PeerId,
        /// The relayed connection the session ran on.
        relayed: ConnectionId,
        /// The direct connection.
        direct: ConnectionId,
        /// Our role.
        role: Role,
        /// Attempts made (the last succeeded).
        attempts: u8,
        /// From the start of the session.
        elapsed: Duration,
    },
    /// The session ended without a direct connection.
    DirectConnectionUpgradeFailed {
        /// The remote.
        peer: PeerId,
        /// The relayed connection the session ran on.
        relayed: ConnectionId,
        /// Our role.
        role: Role,
        /// Attempts made.
        attempts: u8,
        /// Why.
        error: UpgradeError,
    },
}

/// What the engine asks the behaviour to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a `/libp2p/dcutr` stream on `relayed` and run the initiator's exchange.
    OpenStream {
        /// The remote.
        peer: PeerId,
        /// The relayed connection.
        relayed: ConnectionId,
        /// 1-based; hand it back with the exchange's result.
        attempt: u8,
    },
    /// Dial these addresses of `peer` (from the listening socket); report the dial's
    /// connection id with [`HolepunchEngine::handle_dial_issued`].
    Dial {
        /// The remote.
        peer: PeerId,
        /// Its addresses from its `CONNECT`.
        addrs: Vec<Multiaddr>,
        /// 1-based.
        attempt: u8,
    },
}

#[derive(Debug)]
enum Phase {
    /// Initiator: stream requested / exchange running.
    Exchanging,
    /// Initiator: `SYNC` sent, dialing at `at`.
    Scheduled { at: Instant, addrs: Vec<Multiaddr> },
    /// Dial issued; a direct connection must appear by `deadline`.
    Dialing {
        deadline: Instant,
        dial: Option<ConnectionId>,
    },
    /// Responder: waiting for a (next) `CONNECT` until `deadline` (`None`: first one, no
    /// deadline; it lives as long as the relayed connection).
    AwaitingConnect {
        deadline: Option<Instant>,
        last: Option<AttemptOutcome>,
    },
}

#[derive(Debug)]
struct Session {
    role: Role,
    relayed: ConnectionId,
    attempt: u8,
    started: Instant,
    attempt_started: Instant,
    phase: Phase,
}

/// The DCUtR state machine of every peer. See the [module docs](self).
#[derive(Debug)]
pub struct HolepunchEngine {
    config: HolepunchConfig,
    sessions: HashMap<PeerId, Session>,
    /// Per-peer port windows used from the first attempt on ([`HolepunchEngine::set_port_window_hint`]).
    hints: HashMap<PeerId, u16>,
    actions: VecDeque<Action>,
    events: VecDeque<HolepunchEvent>,
}

impl HolepunchEngine {
    /// An engine with no session.
    pub fn new(config: HolepunchConfig) -> Self {
        HolepunchEngine {
            config,
            sessions: HashMap::new(),
            hints: HashMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &HolepunchConfig {
        &self.config
    }

    /// From the first attempt on, dial at least a `window` of predicted ports of `peer`'s
    /// public addresses (`None` removes the hint): for when both NAT profiles are known and
    /// one side allocates ports sequentially per destination, so the plain first attempt
    /// cannot connect. Hints are kept for at most `max_sessions` peers (beyond, a new one is
    /// ignored); the hint's owner removes it when its session ends.
    pub fn set_port_window_hint(&mut self, peer: PeerId, window: Option<u16>) {
        match window {
            Some(w)
                if self.hints.len() < self.config.max_sessions
                    || self.hints.contains_key(&peer) =>
            {
                self.hints.insert(peer, w);
            }
            Some(_) => {}
            None => {
                self.hints.remove(&peer);
            }
        }
    }

    /// The port-window hint for `peer`, if one is set.
    pub fn port_window_hint(&self, peer: &PeerId) -> Option<u16> {
        self.hints.get(peer).copied()
    }

    /// Whether a session with `peer` runs.
    pub fn is_active(&self, peer: &PeerId) -> bool {
        self.sessions.contains_key(peer)
    }

    /// The relayed connection of the session with `peer`, if any.
    pub fn relayed_connection(&self, peer: &PeerId) -> Option<ConnectionId> {
        self.sessions.get(peer).map(|s| s.relayed)
    }

    /// A relayed connection to `peer` was established, with us in `role`. An initiator
    /// starts its first attempt unless `has_direct` (a direct connection exists already) or
    /// a session with the peer runs; a responder waits for the stream.
    pub fn handle_relayed_connection(
        &mut self,
        now: Instant,
        peer: PeerId,
        relayed: ConnectionId,
        role: Role,
        has_direct: bool,
    ) {
        if has_direct
            || self.sessions.contains_key(&peer)
            || self.sessions.len() >= self.config.max_sessions
        {
            return;
        }
        let phase = match role {
            Role::Initiator => {
                self.actions.push_back(Action::OpenStream {
                    peer,
                    relayed,
                    attempt: 1,
                });
                Phase::Exchanging
            }
            Role::Responder => Phase::AwaitingConnect {
                deadline: None,
                last: None,
            },
        };
        self.sessions.insert(
            peer,
            Session {
                role,
                relayed,
                attempt: u8::from(role == Role::Initiator),
                started: now,
                attempt_started: now,
                phase,
            },
        );
    }

    /// A `/libp2p/dcutr` stream from `peer` arrived on `connection`. Returns the attempt
    /// number to run the responder's exchange under, or `None` to refuse the stream (no
    /// responder session on that connection, one already exchanging, or no attempt left).
    /// A stream while we still dial for the previous attempt ends that attempt as
    /// [`AttemptOutcome::Superseded`]: the initiator gave up on it.
    pub fn handle_inbound_stream(
        &mut self,
        now: Instant,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Option<u8> {
        let s = self.sessions.get(&peer)?;
        if s.role != Role::Responder || s.relayed != connection {
            return None;
        }
        if matches!(s.phase, Phase::Dialing { .. }) {
            // The initiator gave up on the attempt we are dialing for and starts the next.
            self.finish_attempt(now, peer, AttemptOutcome::Superseded);
        }
        let s = self.sessions.get_mut(&peer)?;
        if !matches!(s.phase, Phase::AwaitingConnect { .. }) {
            return None;
        }
        s.attempt = s.attempt.saturating_add(1);
        s.attempt_started = now;
        s.phase = Phase::Exchanging;
        Some(s.attempt)
    }

    /// The exchange of attempt `attempt` with `peer` ended: the remote's addresses and, for
    /// the initiator, the measured round trip.
    pub fn handle_exchange_succeeded(
        &mut self,
        now: Instant,
        peer: PeerId,
        attempt: u8,
        addrs: Vec<Multiaddr>,
        rtt: Option<Duration>,
    ) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        if s.attempt != attempt || !matches!(s.phase, Phase::Exchanging) {
            return;
        }
        if addrs.is_empty() {
            self.finish_attempt(now, peer, AttemptOutcome::NoAddresses);
            return;
        }
        let window = self
            .config
            .port_window(attempt)
            .max(self.hints.get(&peer).copied().unwrap_or(0));
        let addrs = with_predicted_ports(addrs, window, self.config.max_dial_addrs);
        match s.role {
            Role::Initiator => {
                let delay = self
                    .config
                    .timing(attempt)
                    .delay(rtt.unwrap_or(Duration::ZERO));
                s.phase = Phase::Scheduled {
                    at: now + delay,
                    addrs,
                };
            }
            Role::Responder => {
                s.phase = Phase::Dialing {
                    deadline: now + self.config.attempt_timeout,
                    dial: None,
                };
                self.actions.push_back(Action::Dial {
                    peer,
                    addrs,
                    attempt,
                });
            }
        }
    }

    /// The exchange of attempt `attempt` with `peer` failed.
    pub fn handle_exchange_failed(
        &mut self,
        now: Instant,
        peer: PeerId,
        attempt: u8,
        outcome: AttemptOutcome,
    ) {
        match self.sessions.get(&peer) {
            Some(s) if s.attempt == attempt && matches!(s.phase, Phase::Exchanging) => {
                self.finish_attempt(now, peer, outcome)
            }
            _ => {}
        }
    }

    /// The behaviour handed the [`Action::Dial`] for `peer` to the swarm as `dial`.
    pub fn handle_dial_issued(&mut self, peer: PeerId, dial: ConnectionId) {
        if let Some(Session {
            phase: Phase::Dialing { dial: d, .. },
            ..
        }) = self.sessions.get_mut(&peer)
        {
            *d = Some(dial);
        }
    }

    /// The dial `dial` failed. Ends its attempt.
    pub fn handle_dial_failed(&mut self, now: Instant, dial: ConnectionId, error: String) {
        let peer = self.sessions.iter().find_map(|(p, s)| match s.phase {
            Phase::Dialing { dial: Some(d), .. } if d == dial => Some(*p),
            _ => None,
        });
        if let Some(peer) = peer {
            self.finish_attempt(now, peer, AttemptOutcome::DialFailed(error));
        }
    }

    /// A direct (non-relayed) connection to `peer` was established: the session, if any,
    /// succeeded, whichever side dialed.
    pub fn handle_direct_connection(&mut self, now: Instant, peer: PeerId, direct: ConnectionId) {
        let Some(s) = self.sessions.remove(&peer) else {
            return;
        };
        if s.attempt == 0 {
            // A responder whose first `CONNECT` never came: not an upgrade of ours.
            return;
        }
        let attempts = s.attempt;
        self.events.push_back(HolepunchEvent::AttemptFinished {
            peer,
            role: s.role,
            attempt: attempts,
            outcome: AttemptOutcome::Succeeded,
            elapsed: now.saturating_duration_since(s.attempt_started),
        });
        self.events
            .push_back(HolepunchEvent::DirectConnectionUpgradeSucceeded {
                peer,
                relayed: s.relayed,
                direct,
                role: s.role,
                attempts,
                elapsed: now.saturating_duration_since(s.started),
            });
    }

    /// The relayed connection `relayed` to `peer` closed: its session ends.
    pub fn handle_relayed_closed(&mut self, now: Instant, peer: PeerId, relayed: ConnectionId) {
        if self.sessions.get(&peer).map(|s| s.relayed) == Some(relayed) {
            self.abort(now, peer, AttemptOutcome::RelayedConnectionClosed);
        }
    }

    /// Cancels the session with `peer`: the attempt in flight ends as
    /// [`AttemptOutcome::Cancelled`] and no other starts. Returns whether one ran.
    pub fn cancel(&mut self, now: Instant, peer: PeerId) -> bool {
        if !self.sessions.contains_key(&peer) {
            return false;
        }
        self.abort(now, peer, AttemptOutcome::Cancelled);
        true
    }

    /// The next deadline: a scheduled dial, an attempt timeout or a responder's wait.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| match &s.phase {
                Phase::Scheduled { at, .. } => Some(*at),
                Phase::Dialing { deadline, .. } => Some(*deadline),
                Phase::AwaitingConnect { deadline, .. } => *deadline,
                Phase::Exchanging => None,
            })
            .min()
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .sessions
            .iter()
            .filter(|(_, s)| match &s.phase {
                Phase::Scheduled { at, .. } => *at <= now,
                Phase::Dialing { deadline, .. } => *deadline <= now,
                Phase::AwaitingConnect { deadline, .. } => deadline.is_some_and(|d| d <= now),
                Phase::Exchanging => false,
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            let Some(s) = self.sessions.get_mut(&peer) else {
                continue;
            };
            match std::mem::replace(&mut s.phase, Phase::Exchanging) {
                Phase::Scheduled { addrs, .. } => {
                    s.phase = Phase::Dialing {
                        deadline: now + self.config.attempt_timeout,
                        dial: None,
                    };
                    let attempt = s.attempt;
                    self.actions.push_back(Action::Dial {
                        peer,
                        addrs,
                        attempt,
                    });
                }
                Phase::Dialing { .. } => self.finish_attempt(now, peer, AttemptOutcome::TimedOut),
                Phase::AwaitingConnect { last, .. } => {
                    let Some(s) = self.sessions.remove(&peer) else {
                        continue;
                    };
                    self.events
                        .push_back(HolepunchEvent::DirectConnectionUpgradeFailed {
                            peer,
                            relayed: s.relayed,
                            role: s.role,
                            attempts: s.attempt,
                            error: UpgradeError::NoRetry {
                                attempts: s.attempt,
                                last: last.unwrap_or(AttemptOutcome::TimedOut),
                            },
                        });
                }
                Phase::Exchanging => {}
            }
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<HolepunchEvent> {
        self.events.pop_front()
    }

    /// Ends the current attempt with `outcome` (not a success) and starts the next one, waits
    /// for it, or ends the session.
    fn finish_attempt(&mut self, now: Instant, peer: PeerId, outcome: AttemptOutcome) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        self.events.push_back(HolepunchEvent::AttemptFinished {
            peer,
            role: s.role,
            attempt: s.attempt,
            outcome: outcome.clone(),
            elapsed: now.saturating_duration_since(s.attempt_started),
        });
        let error = if !outcome.is_retryable() {
            UpgradeError::Aborted(outcome)
        } else if s.attempt >= self.config.max_attempts {
            UpgradeError::AttemptsExceeded {
                attempts: s.attempt,
                last: outcome,
            }
        } else {
            match s.role {
                Role::Initiator => {
                    s.attempt += 1;
                    s.attempt_started = now;
                    s.phase = Phase::Exchanging;
                    self.actions.push_back(Action::OpenStream {
                        peer,
                        relayed: s.relayed,
                        attempt: s.attempt,
                    });
                }
                Role::Responder => {
                    s.phase = Phase::AwaitingConnect {
                        deadline: Some(now + self.config.responder_wait),
                        last: Some(outcome),
                    };
                }
            }
            return;
        };
        if let Some(s) = self.sessions.remove(&peer) {
            self.events
                .push_back(HolepunchEvent::DirectConnectionUpgradeFailed {
                    peer,
                    relayed: s.relayed,
                    role: s.role,
                    attempts: s.attempt,
                    error,
                });
        }
    }

    /// Ends the session with `outcome`, reporting the attempt in flight (if one is).
    fn abort(&mut self, now: Instant, peer: PeerId, outcome: AttemptOutcome) {
        let Some(s) = self.sessions.remove(&peer) else {
            return;
        };
        if !matches!(s.phase, Phase::AwaitingConnect { .. }) {
            self.events.push_back(HolepunchEvent::AttemptFinished {
                peer,
                role: s.role,
                attempt: s.attempt,
                outcome: outcome.clone(),
                elapsed: now.saturating_duration_since(s.attempt_started),
            });
        }
        self.actions.retain(|a| match a {
            Action::OpenStream { peer: p, .. } | Action::Dial { peer: p, .. } => *p != peer,
        });
        self.events
            .push_back(HolepunchEvent::DirectConnectionUpgradeFailed {
                peer,
                relayed: s.relayed,
                role: s.role,
                attempts: s.attempt,
                error: UpgradeError::Aborted(outcome),
            });
    }
}
