//! [`ClientEngine`]: the AutoNAT v2 client's state, sans-IO — the candidate addresses, the
//! servers (connected peers announcing `/libp2p/autonat/2/dial-request`), one probe per
//! address at a time with a fresh nonce, the dial-backs received, and each probe's verdict.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use multiaddr::Multiaddr;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::wire::{DialStatus, ResponseStatus, WireError, MAX_DIAL_DATA};

/// The client's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How often untested candidates are looked for (default 5 s, rust-libp2p's).
    pub probe_interval: Duration,
    /// Candidate addresses kept (default 16); past it the least often reported untested
    /// one is dropped.
    pub max_candidates: usize,
    /// Probes in flight at once (default 4).
    pub max_in_flight: usize,
    /// Time one probe may take, dial data and dial-back included (default 20 s).
    pub probe_timeout: Duration,
    /// A tested address is tested again after this long (default 15 min).
    pub retest_interval: Duration,
    /// The most dial data sent for one probe (default 100,000 bytes, the spec's upper
    /// bound); a server asking for more is an error.
    pub max_dial_data: u64,
    /// Servers tracked (default 256).
    pub max_servers: usize,
    /// Dial-back streams read at once (default 16); more are dropped.
    pub max_dial_back_streams: usize,
    /// Time a server has to send its nonce on a dial-back stream and take our answer
    /// (default 10 s).
    pub dial_back_stream_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            probe_interval: Duration::from_secs(5),
            max_candidates: 16,
            max_in_flight: 4,
            probe_timeout: Duration::from_secs(20),
            retest_interval: Duration::from_secs(15 * 60),
            max_dial_data: MAX_DIAL_DATA,
            max_servers: 256,
            max_dial_back_streams: 16,
            dial_back_stream_timeout: Duration::from_secs(10),
        }
    }
}

/// A probe to run: ask `server` to dial `addr` back with `nonce`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    /// The nonce, which also identifies the probe.
    pub nonce: u64,
    /// The server.
    pub server: PeerId,
    /// The address under test.
    pub addr: Multiaddr,
}

/// What a server answered to a probe, read off the dial-request stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeReply {
    /// `DialResponse.status`.
    pub status: ResponseStatus,
    /// `DialResponse.dialStatus`.
    pub dial_status: DialStatus,
    /// Dial data we sent.
    pub bytes_sent: u64,
}

/// Why a probe said nothing about the address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The server does not speak the protocol.
    #[error("server does not support autonat v2")]
    Unsupported,
    /// `E_REQUEST_REJECTED`: the server's limits.
    #[error("server rejected the request")]
    Rejected,
    /// `E_DIAL_REFUSED`: the server dials none of the addresses.
    #[error("server refused to dial")]
    DialRefused,
    /// `E_INTERNAL_ERROR`.
    #[error("server internal error")]
    Internal,
    /// The server said OK but the nonce never arrived on a dial-back: a broken or lying
    /// server, not a verdict.
    #[error("server reported a dial-back that never arrived")]
    MissingDialBack,
    /// `OK` with `dialStatus` UNUSED, or an address index that is not ours.
    #[error("server broke the protocol: {0}")]
    Protocol(&'static str),
    /// The server asked for more dial data than allowed, or less than the spec's minimum.
    #[error("server asked for {0} bytes of dial data")]
    DialDataOutOfBounds(u64),
    /// A message that is not AutoNAT v2.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// The stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// [`ClientConfig::probe_timeout`] passed.
    #[error("timed out")]
    Timeout,
    /// The server said OK; our nonce came back, but only on a connection that proves
    /// nothing about the address (a lying server, or one dialing back through the wrong
    /// path).
    #[error("dial-back on an unacceptable connection: {0}")]
    DialBackRejected(DialBackRejected),
}

/// The connection a dial-back stream arrived on, as the swarm reported it when it was
/// established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialBackConnection {
    /// The peer that opened the dial-back stream.
    pub peer: PeerId,
    /// The remote dialed us (we are the listener).
    pub inbound: bool,
    /// The connection runs through a circuit relay.
    pub relayed: bool,
    /// The connection was established after the probe's request was sent (a connection
    /// that already existed is not a dial of the tested address).
    pub after_request: bool,
    /// Our address the connection came in on, if known (the socket's bound address).
    pub local_addr: Option<Multiaddr>,
}

/// Why a dial-back carrying a nonce of ours was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DialBackRejected {
    /// No probe of ours is in flight with this nonce.
    #[error("unknown nonce")]
    UnknownNonce,
    /// The stream came from a peer other than the server asked.
    #[error("from a peer other than the server asked")]
    OtherPeer,
    /// The connection runs through a relay.
    #[error("relayed connection")]
    Relayed,
    /// We dialed the connection: the server did not reach us.
    #[error("outbound connection")]
    Outbound,
    /// The connection existed before the request was sent.
    #[error("connection established before the request")]
    PreExisting,
    /// The connection came in on a local socket whose IP is the tested address's but whose
    /// port is not.
    #[error("connection on another local port")]
    OtherPort,
}

/// Why an address was found unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unreachable {
    /// `E_DIAL_ERROR`: the server could not connect to the address.
    NoConnection,
    /// `E_DIAL_BACK_ERROR`: it connected, but the dial-back stream failed.
    DialBackFailed,
}

/// The verdict on an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reachability {
    /// A server dialed it on a new connection and delivered our nonce.
    Reachable,
    /// A server could not reach it.
    Unreachable(Unreachable),
}

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    /// The address tested.
    pub addr: Multiaddr,
    /// The server asked.
    pub server: PeerId,
    /// Dial data sent.
    pub bytes_sent: u64,
    /// The verdict, or why there is none.
    pub result: Result<Reachability, ProbeError>,
}

/// What the engine reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A probe ended.
    Tested(TestResult),
    /// An address became reachable (it was not known reachable before).
    Confirmed(Multiaddr),
    /// An address known reachable was found unreachable.
    Expired(Multiaddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Untested,
    Pending { nonce: u64, received: bool },
    Tested { at: Instant, reachable: bool },
}

#[derive(Debug)]
struct Candidate {
    score: u32,
    status: Status,
    /// Known reachable (confirmed) — kept across re-tests until a verdict says otherwise.
    reachable: bool,
}

#[derive(Debug)]
struct Server {
    last_used: Option<Instant>,
}

/// The client's state.
#[derive(Debug)]
pub struct ClientEngine {
    config: ClientConfig,
    candidates: HashMap<Multiaddr, Candidate>,
    servers: HashMap<PeerId, Server>,
    pending: HashMap<u64, (Multiaddr, PeerId)>,
    /// The first rejected dial-back of each probe in flight whose nonce came back only on an
    /// unacceptable connection (at most one entry per pending probe).
    rejected: HashMap<u64, DialBackRejected>,
    next_tick: Instant,
    transmits: VecDeque<ProbeRequest>,
    events: VecDeque<ClientEvent>,
    rng: StdRng,
}

impl ClientEngine {
    /// An engine whose first look for candidates is one interval after `now`; `seed` seeds
    /// the nonces and the choice among equally good servers (the behaviour seeds it from
    /// the OS).
    pub fn new(config: ClientConfig, now: Instant, seed: u64) -> Self {
        ClientEngine {
            next_tick: now + config.probe_interval,
            config,
            candidates: HashMap::new(),
            servers: HashMap::new(),
            pending: HashMap::new(),
            rejected: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// `addr` may be our external address (reported by a peer, or a listen address): it is
    /// tested at the next tick unless it was tested within [`ClientConfig::retest_interval`].
    /// Each report raises its priority.
    pub fn add_candidate(&mut self, addr: Multiaddr) {
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.score = c.score.saturating_add(1);
            return;
        }
        if self.candidates.len() >= self.config.max_candidates {
            let lowest = self
                .candidates
                .iter()
                .filter(|(_, c)| c.status == Status::Untested)
                .min_by_key(|(_, c)| c.score)
                .map(|(a, _)| a.clone());
            match lowest {
                Some(a) => {
                    self.candidates.remove(&a);
                }
                None => return,
            }
        }
        self.candidates.insert(
            addr,
            Candidate {
                score: 1,
                status: Status::Untested,
                reachable: false,
            },
        );
    }

    /// Forgets `addr` (no longer ours); a probe in flight for it is ignored when it ends.
    pub fn remove_candidate(&mut self, addr: &Multiaddr) {
        self.candidates.remove(addr);
    }

    /// Whether `peer` serves AutoNAT v2 (learnt from its protocols).
    pub fn handle_server_protocols(&mut self, peer: PeerId, supported: bool) {
        if !supported {
            self.servers.remove(&peer);
        } else if !self.servers.contains_key(&peer) && self.servers.len() < self.config.max_servers
        {
            self.servers.insert(peer, Server { last_used: None });
        }
    }

    /// `peer` has no connection left.
    pub fn handle_peer_disconnected(&mut self, peer: PeerId) {
        self.servers.remove(&peer);
    }

    /// The servers known.
    pub fn servers(&self) -> impl Iterator<Item = &PeerId> {
        self.servers.keys()
    }

    /// The addresses last found reachable.
    pub fn reachable_addresses(&self) -> impl Iterator<Item = &Multiaddr> {
        self.candidates
            .iter()
            .filter(|(_, c)| c.reachable)
            .map(|(a, _)| a)
    }

    /// When [`ClientEngine::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    /// Starts probes for the candidates that are due, best reported first, each with a
    /// server used least recently.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.config.probe_interval;
        let retest = self.config.retest_interval;
        let mut due: Vec<(u32, Multiaddr)> = self
            .candidates
            .iter()
            .filter(|(_, c)| match c.status {
                Status::Untested => true,
                Status::Pending { .. } => false,
                Status::Tested { at, .. } => now.saturating_duration_since(at) >= retest,
            })
            .map(|(a, c)| (c.score, a.clone()))
            .collect();
        due.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (_, addr) in due {
            if self.pending.len() >= self.config.max_in_flight {
                break;
            }
            let Some(server) = self.pick_server(now) else {
                tracing_debug_no_server();
                break;
            };
            let mut nonce: u64 = self.rng.gen();
            while self.pending.contains_key(&nonce) {
                nonce = self.rng.gen();
            }
            if let Some(c) = self.candidates.get_mut(&addr) {
                c.status = Status::Pending {
                    nonce,
                    received: false,
                };
            }
            self.pending.insert(nonce, (addr.clone(), server));
            self.transmits.push_back(ProbeRequest {
                nonce,
                server,
                addr,
            });
        }
    }

    fn pick_server(&mut self, now: Instant) -> Option<PeerId> {
        let oldest = self.servers.values().map(|s| s.last_used).min()?;
        let ties: Vec<PeerId> = self
            .servers
            .iter()
            .filter(|(_, s)| s.last_used == oldest)
            .map(|(p, _)| *p)
            .collect();
        let peer = *ties.get(self.rng.gen_range(0..ties.len()))?;
        if let Some(s) = self.servers.get_mut(&peer) {
            s.last_used = Some(now);
        }
        Some(peer)
    }

    /// The address of the probe `nonce` in flight.
    pub fn pending_address(&self, nonce: u64) -> Option<&Multiaddr> {
        self.pending.get(&nonce).map(|(a, _)| a)
    }

    /// The next probe to run.
    pub fn poll_transmit(&mut self) -> Option<ProbeRequest> {
        self.transmits.pop_front()
    }

    /// A dial-back carried `nonce` on `connection`. `Ok` (then the dial-back is answered and
    /// counts) only if `nonce` is a probe of ours in flight and the connection is one the
    /// server opened to the tested address for it: from the server asked, direct (not
    /// relayed), inbound, established after the request was sent, and — when its local
    /// address has the tested address's IP (no translation between) — on the tested port.
    /// A rejected dial-back is not answered; a probe whose nonce came back only that way ends
    /// in [`ProbeError::DialBackRejected`] if the server claims success.
    pub fn handle_dial_back(
        &mut self,
        nonce: u64,
        connection: &DialBackConnection,
    ) -> Result<(), DialBackRejected> {
        let Some((addr, server)) = self.pending.get(&nonce) else {
            return Err(DialBackRejected::UnknownNonce);
        };
        let check = if connection.peer != *server {
            Err(DialBackRejected::OtherPeer)
        } else if connection.relayed {
            Err(DialBackRejected::Relayed)
        } else if !connection.inbound {
            Err(DialBackRejected::Outbound)
        } else if !connection.after_request {
            Err(DialBackRejected::PreExisting)
        } else if connection
            .local_addr
            .as_ref()
            .is_some_and(|local| other_port(local, addr))
        {
            Err(DialBackRejected::OtherPort)
        } else {
            Ok(())
        };
        if let Err(e) = check {
            self.rejected.entry(nonce).or_insert(e);
            return Err(e);
        }
        if let Some(c) = self.candidates.get_mut(addr) {
            if let Status::Pending { nonce: n, received } = &mut c.status {
                if *n == nonce {
                    *received = true;
                }
            }
        }
        Ok(())
    }

    /// The probe `nonce` ended with the server's `reply`, or failed.
    pub fn handle_probe_result(
        &mut self,
        now: Instant,
        nonce: u64,
        reply: Result<ProbeReply, ProbeError>,
    ) {
        let Some((addr, server)) = self.pending.remove(&nonce) else {
            return;
        };
        let received = matches!(
            self.candidates.get(&addr).map(|c| c.status),
            Some(Status::Pending { nonce: n, received: true }) if n == nonce
        );
        let rejected = self.rejected.remove(&nonce);
        let bytes_sent = reply.as_ref().map(|r| r.bytes_sent).unwrap_or(0);
        let result = match reply.and_then(|r| verdict(r, received)) {
            Err(ProbeError::MissingDialBack) => Err(rejected
                .map(ProbeError::DialBackRejected)
                .unwrap_or(ProbeError::MissingDialBack)),
            r => r,
        };
        if result == Err(ProbeError::Unsupported) {
            self.servers.remove(&server);
        }
        let mut change = None;
        if let Some(c) = self.candidates.get_mut(&addr) {
            match result {
                Ok(r) => {
                    let reachable = r == Reachability::Reachable;
                    c.status = Status::Tested { at: now, reachable };
                    if reachable && !c.reachable {
                        change = Some(ClientEvent::Confirmed(addr.clone()));
                    } else if !reachable && c.reachable {
                        change = Some(ClientEvent::Expired(addr.clone()));
                    }
                    c.reachable = reachable;
                }
                // No verdict: the address is tried again at the next tick (another server
                // is preferred: this one was just used).
                Err(_) => c.status = Status::Untested,
            }
        }
        self.events.push_back(ClientEvent::Tested(TestResult {
            addr,
            server,
            bytes_sent,
            result,
        }));
        self.events.extend(change);
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

/// The verdict of a reply, given whether our nonce came back on a dial-back.
fn verdict(reply: ProbeReply, received: bool) -> Result<Reachability, ProbeError> {
    match reply.status {
        ResponseStatus::RequestRejected => return Err(ProbeError::Rejected),
        ResponseStatus::DialRefused => return Err(ProbeError::DialRefused),
        ResponseStatus::InternalError => return Err(ProbeError::Internal),
        ResponseStatus::Ok => {}
    }
    match reply.dial_status {
        DialStatus::Ok if received => Ok(Reachability::Reachable),
        DialStatus::Ok => Err(ProbeError::MissingDialBack),
        DialStatus::DialError => Ok(Reachability::Unreachable(Unreachable::NoConnection)),
        DialStatus::DialBackError => Ok(Reachability::Unreachable(Unreachable::DialBackFailed)),
        DialStatus::Unused => Err(ProbeError::Protocol("OK with dial status UNUSED")),
    }
}

/// `local` (a socket address) has `tested`'s IP but another port: a connection to another
/// socket of ours. Unknown or different IPs (a wildcard bind, a NAT between) say nothing.
fn other_port(local: &Multiaddr, tested: &Multiaddr) -> bool {
    match (ip_port(local), ip_port(tested)) {
        (Some((lip, lport)), Some((tip, tport))) => lip == tip && lport != tport,
        _ => false,
    }
}

fn ip_port(addr: &Multiaddr) -> Option<(std::net::IpAddr, u16)> {
    use multiaddr::Protocol;
    let mut it = addr.iter();
    let ip = match it.next()? {
        Protocol::Ip4(ip) => std::net::IpAddr::V4(ip),
        Protocol::Ip6(ip) => std::net::IpAddr::V6(ip).to_canonical(),
        _ => return None,
    };
    match it.next()? {
        Protocol::Udp(port) | Protocol::Tcp(port) => Some((ip, port)),
        _ => None,
    }
}

fn tracing_debug_no_server() {
    #[cfg(feature = "swarm")]
    tracing::debug!("autonat: candidates to test, but no server connected");
}
