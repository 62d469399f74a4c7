//! [`ServerEngine`]: the AutoNAT v2 server's decisions, sans-IO — which requests are served
//! (concurrency, per-peer and global rates), which address is dialed and how much dial data
//! is asked for first (the amplification defence).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use meshwire_core::PeerId;
use multiaddr::{Multiaddr, Protocol};

use super::wire::{MAX_DIAL_DATA, MIN_DIAL_DATA};

/// The server's limits. Every field is a limit on what clients can make the server do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Requests in service at once, all peers together (default 32); more are answered
    /// `E_REQUEST_REJECTED`.
    pub max_concurrent: usize,
    /// Requests in service at once for one peer (default 4; rust-libp2p's client sends a
    /// request for each untested candidate at once).
    pub max_concurrent_per_peer: usize,
    /// Requests one peer may make per [`ServerConfig::window`] (default 12).
    pub requests_per_peer: u32,
    /// The window of `requests_per_peer` (default 60 s).
    pub window: Duration,
    /// Requests admitted per second, all peers together (default 8): each may cost a dial.
    pub requests_per_second: u32,
    /// Addresses read from one request (default 16); a longer list is refused
    /// (`E_DIAL_REFUSED`).
    pub max_addresses: usize,
    /// The least dial data asked for when the address's IP differs from the observed one
    /// (default 30,000 bytes, the spec's lower bound).
    pub min_dial_data: u64,
    /// The most dial data asked for (default 100,000 bytes, the spec's upper bound).
    pub max_dial_data: u64,
    /// Time to serve one request, dial data and dial-back included (default 10 s, the
    /// client-side limit of rust-libp2p).
    pub request_timeout: Duration,
    /// Time the dial-back (QUIC handshake, stream, nonce, answer) may take (default 5 s).
    pub dial_back_timeout: Duration,
    /// Whether loopback, private (RFC 1918, unique local), link-local and unspecified
    /// addresses are dialed (default `false`: a public server must not probe its own
    /// network on anyone's behalf; tests and LANs turn it on).
    pub dial_private: bool,
    /// Peers whose request counts are kept (default 1024; expired windows go first, then
    /// new peers are refused).
    pub max_tracked_peers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_concurrent: 32,
            max_concurrent_per_peer: 4,
            requests_per_peer: 12,
            window: Duration::from_secs(60),
            requests_per_second: 8,
            max_addresses: 16,
            min_dial_data: MIN_DIAL_DATA,
            max_dial_data: MAX_DIAL_DATA,
            request_timeout: Duration::from_secs(10),
            dial_back_timeout: Duration::from_secs(5),
            dial_private: false,
            max_tracked_peers: 1024,
        }
    }
}

/// Why a request is not served (answered `E_REQUEST_REJECTED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// [`ServerConfig::max_concurrent`] requests are in service.
    #[error("too many requests in service")]
    Busy,
    /// [`ServerConfig::max_concurrent_per_peer`] requests of this peer are in service.
    #[error("too many requests of this peer in service")]
    PeerBusy,
    /// The peer made [`ServerConfig::requests_per_peer`] requests in the window.
    #[error("peer request rate")]
    PeerRate,
    /// [`ServerConfig::requests_per_second`] requests were admitted this second.
    #[error("request rate")]
    Rate,
    /// [`ServerConfig::max_tracked_peers`] peers are counted already.
    #[error("too many peers")]
    TooManyPeers,
    /// The request came over a relayed connection: the client's IP is unknown.
    #[error("relayed connection")]
    Relayed,
}

/// What the server does with a dial request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Dial none of the addresses (`E_DIAL_REFUSED`).
    Refuse,
    /// Dial `addr`, the request's address `idx`, at `target`; ask for `dial_data` bytes
    /// first when set.
    Dial {
        /// Index in the request.
        idx: u32,
        /// The address.
        addr: Multiaddr,
        /// Its socket.
        target: SocketAddr,
        /// Dial data to ask for first.
        dial_data: Option<u64>,
    },
}

/// The server's admission state.
#[derive(Debug)]
pub struct ServerEngine {
    config: ServerConfig,
    active: usize,
    active_per_peer: HashMap<PeerId, usize>,
    counts: HashMap<PeerId, (Instant, u32)>,
    second: Option<(Instant, u32)>,
}

impl ServerEngine {
    /// An engine with `config`'s limits.
    pub fn new(config: ServerConfig) -> Self {
        ServerEngine {
            config,
            active: 0,
            active_per_peer: HashMap::new(),
            counts: HashMap::new(),
            second: None,
        }
    }

    /// The limits.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Requests in service.
    pub fn active(&self) -> usize {
        self.active
    }

    /// A request of `peer` arrived at `now`: `Ok` if it is served (then
    /// [`ServerEngine::handle_finished`] must follow), else why not. A refused request
    /// still counts against the peer's rate.
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn handle_request(&mut self, now: Instant, peer: PeerId) -> Result<(), Refusal> {
        let window = self.config.window;
        if self.counts.len() >= self.config.max_tracked_peers && !self.counts.contains_key(&peer) {
            self.counts
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if self.counts.len() >= self.config.max_tracked_peers {
                return Err(Refusal::TooManyPeers);
            }
        }
        let entry = self.counts.entry(peer).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 > self.config.requests_per_peer {
            return Err(Refusal::PeerRate);
        }
        if self.active >= self.config.max_concurrent {
            return Err(Refusal::Busy);
        }
        let per_peer = self.active_per_peer.get(&peer).copied().unwrap_or(0);
        if per_peer >= self.config.max_concurrent_per_peer {
            return Err(Refusal::PeerBusy);
        }
        let second = match self.second {
            Some((start, n)) if now.saturating_duration_since(start) < Duration::from_secs(1) => {
                (start, n)
            }
            _ => (now, 0),
        };
        if second.1 >= self.config.requests_per_second {
            self.second = Some(second);
            return Err(Refusal::Rate);
        }
        self.second = Some((second.0, second.1 + 1));
        self.active += 1;
        *self.active_per_peer.entry(peer).or_insert(0) += 1;
        Ok(())
    }

    /// A request admitted by [`ServerEngine::handle_request`] ended (in any way).
    pub fn handle_finished(&mut self, peer: PeerId) {
        self.active = self.active.saturating_sub(1);
        if let Some(n) = self.active_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active_per_peer.remove(&peer);
            }
        }
    }

    /// [`ServerConfig::plan`] with this engine's limits.
    pub fn plan(
        &self,
        client: PeerId,
        observed: &Multiaddr,
        addrs: &[Multiaddr],
        draw: u64,
    ) -> Plan {
        self.config.plan(client, observed, addrs, draw)
    }
}

impl ServerConfig {
    /// Chooses the address to dial: the first of `addrs` that is a QUIC address this server
    /// dials (the client's own `/p2p` if any, a public IP unless
    /// [`ServerConfig::dial_private`]); dial data when its IP differs from the IP the
    /// request came from (`observed`). `draw` is a random number choosing the amount within
    /// the configured range.
    pub fn plan(
        &self,
        client: PeerId,
        observed: &Multiaddr,
        addrs: &[Multiaddr],
        draw: u64,
    ) -> Plan {
        if addrs.len() > self.max_addresses {
            return Plan::Refuse;
        }
        let observed_ip = ip_of(observed);
        for (idx, addr) in addrs.iter().enumerate() {
            let Some(target) = quic_target(addr, client) else {
                continue;
            };
            if !self.dial_private && !is_public(target.ip()) {
                continue;
            }
            let Ok(idx) = u32::try_from(idx) else {
                break;
            };
            let dial_data = (observed_ip != Some(target.ip())).then(|| {
                let (lo, hi) = (
                    self.min_dial_data,
                    self.max_dial_data.max(self.min_dial_data),
                );
                lo + draw % (hi - lo + 1)
            });
            return Plan::Dial {
                idx,
                addr: addr.clone(),
                target,
                dial_data,
            };
        }
        Plan::Refuse
    }
}

/// The IP of an address's first component, if it is one (an IPv4-mapped IPv6 address as
/// the IPv4 address it embeds).
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip).to_canonical()),
        _ => None,
    }
}

/// The socket of `/ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/<client>]`; `None` for anything
/// else (another transport, port 0, another peer's id, trailing parts).
pub(crate) fn quic_target(addr: &Multiaddr, client: PeerId) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip = match it.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    let Protocol::Udp(port) = it.next()? else {
        return None;
    };
    // An IPv4-mapped IPv6 address is dialled (by the dual-stack socket) as the IPv4 address
    // it embeds: judge it, compare it with the observed IP and dial it as that address.
    let ip = ip.to_canonical();
    if port == 0 || ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    let Protocol::QuicV1 = it.next()? else {
        return None;
    };
    match it.next() {
        None => {}
        Some(Protocol::P2p(id)) if id.to_bytes() == client.to_bytes() => {}
        Some(_) => return None,
    }
    if it.next().is_some() {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

/// Whether `ip` is reachable from the Internet at large: not loopback, private, link-local,
/// shared (CGNAT), benchmarking, documentation, reserved, broadcast, multicast, "this
/// network", IETF protocol assignments, unique-local, site-local or discard-only, nor an IPv6
/// address that relays to an IPv4 one we cannot judge (IPv4-compatible `::/96`, NAT64
/// `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo and the rest of
/// `2001::/23`). An IPv4-mapped address (`::ffff:0:0/96`) is judged as the IPv4 address it
/// embeds, since the dual-stack dial-back socket sends to that IPv4 address.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    !(o[0] == 0 // 0.0.0.0/8 "this network"
        || v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_multicast()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF assignments
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 192.88.99.0/24 6to4 relay anycast
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // 240.0.0.0/4 reserved (and broadcast)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    // ::ffff:0:0/96 (IPv4-mapped): the dual-stack socket dials the IPv4 address it embeds.
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = v6.segments();
    // ::/96 (IPv4-compatible, deprecated; also :: and ::1).
    if s[..6] == [0; 6] {
        return false;
    }
    !(v6.is_multicast()
        || (s[0] == 0x0064 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1)) // NAT64
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // 100::/64 discard-only
        || (s[0] == 0x2001 && s[1] < 0x0200) // 2001::/23 IETF protocol assignments (Teredo, ORCHID, benchmarking)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32 documentation
        || s[0] == 0x2002 // 2002::/16 6to4
        || (s[0] == 0x3fff && s[1] < 0x1000) // 3fff::/20 documentation
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique-local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0) // fec0::/10 site-local (deprecated)
}
