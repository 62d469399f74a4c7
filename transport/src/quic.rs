//! QUIC v1 over quinn with the libp2p TLS handshake: addresses `/ip4|ip6/<ip>/udp/<port>/quic-v1`.
//!
//! One UDP socket (one quinn endpoint) per listener serves both the connections it accepts and
//! the connections dialed from it, so the port peers see for our dials is our listening port
//! (hole punching relies on it). Without a suitable listener, dials use a client-only endpoint
//! created on first use.
//!
//! The settings of [`QuicConfig`] default to rust-libp2p's QUIC defaults (idle timeout, keep
//! alive, stream limit), so meshwire and rust-libp2p peers behave alike, except the receive
//! windows and the datagram buffer: they are sized for the resource manager's reservation of
//! a connection (1.5 MiB + 256 KiB instead of 15 MB + 1 MiB), so what hostile peers can make
//! us buffer is bounded by what the resource manager granted. They are all public fields and [`QuicConfig::transport_config`] hands the same
//! settings to raw quinn for like-for-like benchmarks.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use meshwire_core::{Direction, Keypair, PeerId};
use multiaddr::{Multiaddr, Protocol};
use tokio::sync::mpsc;
use tracing::debug;

use crate::connection::{ConnInner, Connection};
pub use crate::quic_sockets::{AdoptError, QuicSockets};
use crate::tls::{self, LocalIdentity, TlsError};
use crate::{ListenerId, PendingConnection, Transport, TransportError, TransportEvent};

/// Settings of the QUIC transport.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// Time allowed for the QUIC + TLS handshake (default 5 s).
    pub handshake_timeout: Duration,
    /// A connection with no traffic for this long is closed (default 10 s).
    pub max_idle_timeout: Duration,
    /// Interval of keep-alive packets, so an idle but wanted connection survives
    /// `max_idle_timeout` (default 5 s).
    pub keep_alive_interval: Duration,
    /// Bidirectional streams the peer may have open at once (default 256).
    pub max_concurrent_streams: u32,
    /// Receive window of one stream, in bytes (default 1 MiB: two thirds of the connection
    /// window, as the resource manager's default limits assume).
    pub stream_receive_window: u32,
    /// Receive window of the whole connection, in bytes (default 1.5 MiB). This is what a
    /// peer can make us buffer on one connection; the swarm's resource manager reserves it
    /// per connection (`meshwire_rcmgr::DEFAULT_CONNECTION_WINDOW`), so with rust-libp2p's
    /// 15 MB a thousand peers that never let us read could pin 15 GB.
    pub receive_window: u32,
    /// Bytes in flight we allow ourselves to send on one connection (default 15 MB).
    pub send_window: u64,
    /// Buffer for received datagrams, `None` to refuse datagrams (default 256 KiB: SWIM probes
    /// are at most a few KiB each).
    pub datagram_receive_buffer: Option<usize>,
    /// Pending handshakes accepted per listener before new ones are refused (default 256).
    pub max_pending_incoming: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            handshake_timeout: Duration::from_secs(5),
            max_idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(5),
            max_concurrent_streams: 256,
            stream_receive_window: 1 << 20,
            receive_window: 3 << 19,
            send_window: 15_000_000,
            datagram_receive_buffer: Some(256 << 10),
            max_pending_incoming: 256,
        }
    }
}

impl QuicConfig {
    /// The quinn transport settings these values stand for.
    pub fn transport_config(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(self.max_concurrent_streams.into());
        t.max_concurrent_uni_streams(0u32.into());
        t.stream_receive_window(self.stream_receive_window.into());
        t.receive_window(self.receive_window.into());
        t.send_window(self.send_window);
        t.keep_alive_interval(Some(self.keep_alive_interval));
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.max_idle_timeout).ok());
        t.datagram_receive_buffer_size(self.datagram_receive_buffer);
        t.allow_spin(false);
        t
    }
}

/// Parses `/ip4|ip6/<ip>/udp/<port>/quic-v1` (an optional `/p2p/<peer>` must be split off first).
pub fn multiaddr_to_socketaddr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let port = match it.next()? {
        Protocol::Udp(p) => p,
        _ => return None,
    };
    match (it.next(), it.next()) {
        (Some(Protocol::QuicV1), None) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// The multiaddr `/ip4|ip6/<ip>/udp/<port>/quic-v1` of a socket address.
pub fn socketaddr_to_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => Protocol::Ip4(v4),
            None => Protocol::Ip6(ip),
        },
    };
    Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

struct Listener {
    endpoint: quinn::Endpoint,
    local: SocketAddr,
    /// The addresses reported: `local`, or for a wildcard socket (`0.0.0.0` / `::`) the
    /// interface addresses of its family when it started listening.
    reported: Vec<SocketAddr>,
    incoming: mpsc::Receiver<quinn::Incoming>,
    task: tokio::task::JoinHandle<()>,
}

/// The QUIC transport. See the [module docs](self).
pub struct QuicTransport {
    local_peer: PeerId,
    identity: LocalIdentity,
    config: QuicConfig,
    server_config: quinn::ServerConfig,
    listeners: HashMap<ListenerId, Listener>,
    client_v4: Option<quinn::Endpoint>,
    client_v6: Option<quinn::Endpoint>,
    events: VecDeque<TransportEvent>,
    sockets: QuicSockets,
}

impl QuicTransport {
    /// A QUIC transport authenticating as `keypair`. Must be called inside a tokio runtime.
    pub fn new(keypair: Keypair, config: QuicConfig) -> Result<Self, TransportError> {
        let identity = LocalIdentity::new(&keypair)?;
        let server_tls = identity.server_config()?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server_tls))
            .map_err(|e| TransportError::Tls(TlsError::Config(e.to_string())))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(config.transport_config()));
        server_config.migration(false);
        Ok(QuicTransport {
            local_peer: keypair.peer_id(),
            identity,
            config,
            server_config,
            listeners: HashMap::new(),
            client_v4: None,
            client_v6: None,
            events: VecDeque::new(),
            sockets: QuicSockets::default(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &QuicConfig {
        &self.config
    }

    /// The raw sockets of this transport: listener sockets to send probes from, sockets
    /// handed over for dials ([`QuicSockets`]). Clones share them.
    pub fn sockets(&self) -> QuicSockets {
        self.sockets.clone()
    }

    fn new_endpoint(
        &self,
        bind: SocketAddr,
        server: bool,
    ) -> Result<quinn::Endpoint, TransportError> {
        self.endpoint_on(UdpSocket::bind(bind)?, server)
    }

    fn endpoint_on(
        &self,
        socket: UdpSocket,
        server: bool,
    ) -> Result<quinn::Endpoint, TransportError> {
        let server_config = server.then(|| self.server_config.clone());
        let runtime = quinn::default_runtime().ok_or_else(|| {
            TransportError::Io(std::io::Error::other("no async runtime (tokio) found"))
        })?;
        Ok(quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            server_config,
            socket,
            runtime,
        )?)
    }

    /// Picks the endpoint to dial `target` from: a listener of the same address family that can
    /// reach it (so the remote sees our listening port), else the client-only endpoint.
    fn endpoint_for(&mut self, target: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
        let target_loopback = target.ip().is_loopback();
        let mut best: Option<&Listener> = None;
        for l in self.listeners.values() {
            if l.local.is_ipv4() != target.is_ipv4() {
                continue;
            }
            let ip = l.local.ip();
            if ip.is_unspecified() || ip.is_loopback() == target_loopback {
                // Prefer an unspecified (all-interfaces) listener, then the oldest port.
                match best {
                    Some(b) if b.local.ip().is_unspecified() && !ip.is_unspecified() => {}
                    _ => best = Some(l),
                }
            }
        }
        if let Some(l) = best {
            return Ok(l.endpoint.clone());
        }
        let slot_is_v4 = target.is_ipv4();
        let existing = if slot_is_v4 {
            &self.client_v4
        } else {
            &self.client_v6
        };
        if let Some(e) = existing {
            return Ok(e.clone());
        }
        let bind: SocketAddr = if slot_is_v4 {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let e = self.new_endpoint(bind, false)?;
        if slot_is_v4 {
            self.client_v4 = Some(e.clone());
        } else {
            self.client_v6 = Some(e.clone());
        }
        Ok(e)
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.task.abort();
        }
    }
}

/// Reads the authenticated peer id of an established quinn connection (its certificate was
/// fully verified by the TLS verifiers during the handshake).
fn remote_peer_id(conn: &quinn::Connection) -> Result<PeerId, TransportError> {
    let identity = conn
        .peer_identity()
        .ok_or(TransportError::Tls(TlsError::BadCertificate(
            "no peer certificate".into(),
        )))?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| {
            TransportError::Tls(TlsError::BadCertificate(
                "unexpected peer identity type".into(),
            ))
        })?;
    Ok(tls::peer_id_of_authenticated_peer(&certs)?)
}

fn connection_from(
    conn: quinn::Connection,
    peer: PeerId,
    local: SocketAddr,
    direction: Direction,
) -> Connection {
    let remote_addr = socketaddr_to_multiaddr(conn.remote_address());
    Connection {
        inner: ConnInner::Quic(conn),
        peer,
        remote_addr,
        local_addr: socketaddr_to_multiaddr(local),
        direction,
    }
}

impl Transport for QuicTransport {
    fn local_peer_id(&self) -> PeerId {
        self.local_peer
    }

    fn listen_on(&mut self, addr: Multiaddr) -> Result<ListenerId, TransportError> {
        let sock = multiaddr_to_socketaddr(&addr).ok_or(TransportError::UnsupportedAddress {
            addr: addr.clone(),
            reason: "QUIC listens on /ip4|ip6/<ip>/udp/<port>/quic-v1",
        })?;
        let socket = UdpSocket::bind(sock)?;
        let probe_socket = socket.try_clone()?;
        let endpoint = self.endpoint_on(socket, true)?;
        let local = endpoint.local_addr()?;
        self.sockets.add_listener(local, probe_socket);
        let (tx, rx) = mpsc::channel(self.config.max_pending_incoming.max(1));
        let accept_endpoint = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = accept_endpoint.accept().await {
                if let Err(mpsc::error::TrySendError::Full(incoming)) = tx.try_send(incoming) {
                    debug!(remote = %incoming.remote_address(), "too many pending handshakes; refusing");
                    incoming.refuse();
                }
            }
        });
        let id = ListenerId::next();
        let reported = reported_addrs(local);
        for addr in &reported {
            self.events.push_back(TransportEvent::NewListenAddr {
                listener: id,
                addr: socketaddr_to_multiaddr(*addr),
            });
        }
        self.listeners.insert(
            id,
            Listener {
                endpoint,
                local,
                reported,
                incoming: rx,
                task,
            },
        );
        Ok(id)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(l) = self.listeners.remove(&id) else {
            return false;
        };
        l.task.abort();
        self.sockets.remove_listener(l.local);
        // Stop accepting; connections already on this socket live on until they close.
        l.endpoint.set_server_config(None);
        self.events.push_back(TransportEvent::ListenerClosed {
            listener: id,
            reason: Ok(()),
        });
        true
    }

    fn dial(
        &mut self,
        addr: &Multiaddr,
        expected: Option<PeerId>,
    ) -> Result<PendingConnection, TransportError> {
        let (bare, expected) = crate::split_peer_id(addr, expected)?;
        let target = multiaddr_to_socketaddr(&bare).ok_or(TransportError::UnsupportedAddress {
            addr: addr.clone(),
            reason: "QUIC dials /ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/<peer>]",
        })?;
        if target.port() == 0 || target.ip().is_unspecified() {
            return Err(TransportError::UnsupportedAddress {
                addr: addr.clone(),
                reason: "cannot dial port 0 or an unspecified ip",
            });
        }
        // A socket handed over for this target (a spray's hit) carries the dial, on an
        // endpoint of its own that lives as long as its connection.
        let endpoint = match self.sockets.take_adopted(target) {
            Some(socket) => self.endpoint_on(socket, false)?,
            None => self.endpoint_for(target)?,
        };
        let local = endpoint.local_addr()?;
        let (tls_config, outcome) = self.identity.client_config(expected)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls_config))
            .map_err(|e| TransportError::Tls(TlsError::Config(e.to_string())))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
        client_config.transport_config(Arc::new(self.config.transport_config()));
        let connecting = endpoint
            .connect_with(client_config, target, "l")
            .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
        let timeout = self.config.handshake_timeout;
        Ok(Box::pin(async move {
            let conn = match tokio::time::timeout(timeout, connecting).await {
                Err(_) => return Err(TransportError::HandshakeTimeout),
                Ok(Err(e)) => {
                    return Err(match outcome.take_error() {
                        Some(TlsError::PeerIdMismatch { expected, actual }) => {
                            TransportError::PeerIdMismatch { expected, actual }
                        }
                        Some(tls) => TransportError::Tls(tls),
                        None => TransportError::Connection(e.into()),
                    })
                }
                Ok(Ok(c)) => c,
            };
            let peer = remote_peer_id(&conn)?;
            if let Some(expected) = expected {
                if peer != expected {
                    conn.close(1u32.into(), b"peer id mismatch");
                    return Err(TransportError::PeerIdMismatch {
                        expected,
                        actual: peer,
                    });
                }
            }
            Ok(connection_from(conn, peer, local, Direction::Outbound))
        }))
    }

    fn can_dial(&self, addr: &Multiaddr) -> bool {
        crate::split_peer_id(addr, None)
            .ok()
            .and_then(|(a, _)| multiaddr_to_socketaddr(&a))
            .is_some()
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listeners
            .values()
            .flat_map(|l| l.reported.iter().map(|a| socketaddr_to_multiaddr(*a)))
            .collect()
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        if let Some(ev) = self.events.pop_front() {
            return Poll::Ready(ev);
        }
        let timeout = self.config.handshake_timeout;
        let mut closed = None;
        for (id, l) in self.listeners.iter_mut() {
            match l.incoming.poll_recv(cx) {
                Poll::Ready(Some(incoming)) => {
                    let remote = incoming.remote_address();
                    // On a wildcard socket, the address the packet came in on.
                    let local = match incoming.local_ip() {
                        Some(ip) if l.local.ip().is_unspecified() => {
                            SocketAddr::new(ip, l.local.port())
                        }
                        _ => l.local,
                    };
                    let upgrade: PendingConnection = Box::pin(async move {
                        let connecting = incoming
                            .accept()
                            .map_err(|e| TransportError::Connection(e.into()))?;
                        let conn = match tokio::time::timeout(timeout, connecting).await {
                            Err(_) => return Err(TransportError::HandshakeTimeout),
                            Ok(r) => r.map_err(|e| TransportError::Connection(e.into()))?,
                        };
                        let peer = remote_peer_id(&conn)?;
                        Ok(connection_from(conn, peer, local, Direction::Inbound))
                    });
                    return Poll::Ready(TransportEvent::Incoming {
                        listener: *id,
                        local_addr: socketaddr_to_multiaddr(local),
                        remote_addr: socketaddr_to_multiaddr(remote),
                        upgrade,
                    });
                }
                Poll::Ready(None) => {
                    closed = Some(*id);
                    break;
                }
                Poll::Pending => {}
            }
        }
        if let Some(id) = closed {
            if let Some(l) = self.listeners.remove(&id) {
                self.sockets.remove_listener(l.local);
            }
            return Poll::Ready(TransportEvent::ListenerClosed {
                listener: id,
                reason: Err(TransportError::Io(std::io::Error::other(
                    "listener endpoint closed",
                ))),
            });
        }
        Poll::Pending
    }
}

/// The addresses a listener bound to `local` is reachable at: `local` itself, or, for a
/// wildcard address, every interface address of the same family (read once, when listening
/// starts; interfaces that appear later are not reported). Falls back to `local` if the
/// interfaces cannot be read or none has an address of that family.
fn reported_addrs(local: SocketAddr) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let mut addrs: Vec<SocketAddr> = match if_addrs::get_if_addrs() {
        Ok(ifaces) => ifaces
            .into_iter()
            .map(|i| i.ip())
            .filter(|ip| ip.is_ipv4() == local.is_ipv4())
            // Link-local IPv6 addresses need a scope id that multiaddrs cannot carry.
            .filter(|ip| match ip {
                std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
                std::net::IpAddr::V4(_) => true,
            })
            .map(|ip| SocketAddr::new(ip, local.port()))
            .collect(),
        Err(e) => {
            debug!(error = %e, "cannot read interface addresses; reporting the wildcard");
            Vec::new()
        }
    };
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        addrs.push(local);
    }
    addrs
}
