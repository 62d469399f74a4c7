//! Raw UDP sockets shared with the QUIC transport ([`QuicSockets`]): datagrams sent from a
//! listener's socket (hole-punching probes that must leave from the listening port), and
//! sockets handed to the transport for the next dial to one address (the socket a birthday
//! spray found a way through).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

/// Sockets handed over for dials at once, at most (default of [`QuicSockets::new`]).
pub const DEFAULT_MAX_ADOPTED: usize = 64;

/// Why a socket was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// [`QuicSockets`] holds its limit of sockets waiting for their dial.
    #[error("{0} sockets already wait for their dial")]
    Full(usize),
    /// The socket's local address cannot be read, or its family differs from the target's.
    #[error("socket unusable for {target}: {reason}")]
    Unusable {
        /// The dial target.
        target: SocketAddr,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct Inner {
    /// A clone of each listener's socket, by its local address.
    listeners: Vec<(SocketAddr, UdpSocket)>,
    /// Sockets waiting for the next dial to their target.
    adopted: HashMap<SocketAddr, UdpSocket>,
}

/// A handle on the raw sockets of one [`QuicTransport`](crate::quic::QuicTransport) (from
/// [`QuicTransport::sockets`](crate::quic::QuicTransport::sockets); clones share them).
///
/// * [`QuicSockets::send_from_listener`] sends a datagram from a listening socket, so the
///   NAT in front of us maps it like our QUIC packets: the port the remote knows.
/// * [`QuicSockets::adopt_for_dial`] gives the transport a bound socket: the next dial to
///   that target runs QUIC on it (a client endpoint of its own), so the dial leaves through
///   the NAT mapping that socket already has. At most `max_adopted` wait at once.
#[derive(Clone, Debug)]
pub struct QuicSockets {
    inner: Arc<Mutex<Inner>>,
    max_adopted: usize,
}

impl Default for QuicSockets {
    fn default() -> Self {
        QuicSockets::new(DEFAULT_MAX_ADOPTED)
    }
}

impl QuicSockets {
    /// A handle keeping at most `max_adopted` sockets waiting for their dial.
    pub fn new(max_adopted: usize) -> Self {
        QuicSockets {
            inner: Arc::default(),
            max_adopted,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The local addresses of the listening sockets.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.lock().listeners.iter().map(|(a, _)| *a).collect()
    }

    /// Sends `payload` to `to` from a listening socket of `to`'s address family (the
    /// oldest). `WouldBlock` when the socket's send buffer is full.
    ///
    /// # Errors
    ///
    /// No listener of that family (`NotFound`), or the send failed.
    pub fn send_from_listener(&self, to: SocketAddr, payload: &[u8]) -> io::Result<usize> {
        let inner = self.lock();
        let (_, socket) = inner
            .listeners
            .iter()
            .find(|(a, _)| a.is_ipv4() == to.is_ipv4())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no QUIC listener"))?;
        socket.send_to(payload, to)
    }

    /// Hands `socket` to the transport: the next dial to `target` runs from it. Replaces a
    /// socket already waiting for `target`.
    ///
    /// # Errors
    ///
    /// [`AdoptError::Full`] at the limit; [`AdoptError::Unusable`] when the socket's family
    /// is not the target's.
    pub fn adopt_for_dial(&self, target: SocketAddr, socket: UdpSocket) -> Result<(), AdoptError> {
        let local = socket.local_addr().map_err(|e| AdoptError::Unusable {
            target,
            reason: e.to_string(),
        })?;
        if local.is_ipv4() != target.is_ipv4() {
            return Err(AdoptError::Unusable {
                target,
                reason: format!("local address {local} of another family"),
            });
        }
        let mut inner = self.lock();
        if !inner.adopted.contains_key(&target) && inner.adopted.len() >= self.max_adopted {
            return Err(AdoptError::Full(self.max_adopted));
        }
        inner.adopted.insert(target, socket);
        Ok(())
    }

    /// Takes back the socket waiting for `target`, if any (the dial was abandoned).
    pub fn take_adopted(&self, target: SocketAddr) -> Option<UdpSocket> {
        self.lock().adopted.remove(&target)
    }

    pub(crate) fn add_listener(&self, local: SocketAddr, socket: UdpSocket) {
        self.lock().listeners.push((local, socket));
    }

    pub(crate) fn remove_listener(&self, local: SocketAddr) {
        self.lock().listeners.retain(|(a, _)| *a != local);
    }
}
