//! An in-process transport with the same [`Transport`] trait as QUIC, for fast, deterministic
//! tests of the layers above (swarm, behaviours) with no sockets.
//!
//! Addresses are `/memory/<port>`; `/memory/0` picks a free port. Peers are authenticated by
//! the process-wide hub (it knows each listener's [`PeerId`]), streams are bounded in-memory
//! pipes with backpressure, datagrams are bounded queues that drop when full.
//!
//! [`MemoryTransport::without_datagrams`] makes connections without datagrams, like a
//! relayed connection (streams over a relay stream): their
//! [`max_datagram_size`](Connection::max_datagram_size) is `None` and sending or reading a
//! datagram fails with [`ConnectionError::DatagramsUnsupported`](crate::ConnectionError::DatagramsUnsupported).
//! A connection has datagrams only if both the dialer's and the listener's transports do.
//!
//! ```
//! use meshwire_transport::{identity::Keypair, memory::MemoryTransport, Transport, TransportExt, TransportEvent};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut a = MemoryTransport::new(Keypair::generate().peer_id());
//! let mut b = MemoryTransport::new(Keypair::generate().peer_id());
//! a.listen_on("/memory/0".parse().unwrap()).unwrap();
//! let TransportEvent::NewListenAddr { addr, .. } = a.next_event().await else { panic!() };
//! let dial = b.dial(&addr, Some(a.local_peer_id())).unwrap();
//! let TransportEvent::Incoming { upgrade, .. } = a.next_event().await else { panic!() };
//! let (out, inc) = tokio::join!(dial, upgrade);
//! assert_eq!(out.unwrap().peer_id(), a.local_peer_id());
//! assert_eq!(inc.unwrap().peer_id(), b.local_peer_id());
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use meshwire_core::{Direction, PeerId};
use multiaddr::{Multiaddr, Protocol};
use tokio::sync::{mpsc, oneshot};

use crate::connection::in_memory::{lock, MemConnection};
use crate::connection::{ConnInner, Connection};
use crate::{ListenerId, PendingConnection, Transport, TransportError, TransportEvent};

pub use crate::connection::in_memory::MAX_MEMORY_DATAGRAM;

/// Connection attempts queued at a listener before dials are refused.
const LISTEN_BACKLOG: usize = 128;

struct HubEntry {
    peer: PeerId,
    tx: mpsc::Sender<MemIncoming>,
    /// Whether the listener's transport has datagrams.
    datagrams: bool,
}

fn hub() -> &'static Mutex<HashMap<u64, HubEntry>> {
    static HUB: OnceLock<Mutex<HashMap<u64, HubEntry>>> = OnceLock::new();
    HUB.get_or_init(|| Mutex::new(HashMap::new()))
}

struct MemIncoming {
    remote_peer: PeerId,
    remote_addr: Multiaddr,
    conn: MemConnection,
    accepted: oneshot::Sender<()>,
}

/// The in-memory transport. See the [module docs](self).
pub struct MemoryTransport {
    local_peer: PeerId,
    listeners: HashMap<ListenerId, (u64, mpsc::Receiver<MemIncoming>)>,
    events: VecDeque<TransportEvent>,
    datagrams: bool,
}

impl MemoryTransport {
    /// A transport that authenticates as `local_peer`, with datagrams.
    pub fn new(local_peer: PeerId) -> Self {
        MemoryTransport {
            local_peer,
            listeners: HashMap::new(),
            events: VecDeque::new(),
            datagrams: true,
        }
    }

    /// This transport without datagrams: the connections it dials or accepts carry streams
    /// only, like relayed connections. Their
    /// [`max_datagram_size`](Connection::max_datagram_size) is `None`, and
    /// [`send_datagram`](Connection::send_datagram) and
    /// [`read_datagram`](Connection::read_datagram) fail at once with
    /// [`ConnectionError::DatagramsUnsupported`](crate::ConnectionError::DatagramsUnsupported).
    ///
    /// ```
    /// use meshwire_transport::{identity::Keypair, memory::MemoryTransport, ConnectionError};
    /// use meshwire_transport::{Transport, TransportEvent, TransportExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut a = MemoryTransport::new(Keypair::generate().peer_id()).without_datagrams();
    /// let mut b = MemoryTransport::new(Keypair::generate().peer_id());
    /// a.listen_on("/memory/0".parse().unwrap()).unwrap();
    /// let TransportEvent::NewListenAddr { addr, .. } = a.next_event().await else { panic!() };
    /// let dial = b.dial(&addr, None).unwrap();
    /// let TransportEvent::Incoming { upgrade, .. } = a.next_event().await else { panic!() };
    /// let (out, _inc) = tokio::join!(dial, upgrade);
    /// let out = out.unwrap();
    /// // One side without datagrams: the connection has none.
    /// assert_eq!(out.max_datagram_size(), None);
    /// assert!(matches!(out.send_datagram("x".into()), Err(ConnectionError::DatagramsUnsupported)));
    /// # }
    /// ```
    pub fn without_datagrams(mut self) -> Self {
        self.datagrams = false;
        self
    }

    fn port_of(addr: &Multiaddr) -> Option<u64> {
        let mut it = addr.iter();
        match (it.next(), it.next()) {
            (Some(Protocol::Memory(p)), None) => Some(p),
            _ => None,
        }
    }

    fn own_addr(&self) -> Multiaddr {
        let port = self.listeners.values().map(|(p, _)| *p).min().unwrap_or(0);
        Multiaddr::empty().with(Protocol::Memory(port))
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        let mut hub = lock(hub());
        for (port, _) in self.listeners.values() {
            hub.remove(port);
        }
    }
}

impl Transport for MemoryTransport {
    fn local_peer_id(&self) -> PeerId {
        self.local_peer
    }

    fn listen_on(&mut self, addr: Multiaddr) -> Result<ListenerId, TransportError> {
        let port = Self::port_of(&addr).ok_or(TransportError::UnsupportedAddress {
            addr: addr.clone(),
            reason: "the memory transport listens on /memory/<port>",
        })?;
        let mut hub = lock(hub());
        let port = if port == 0 {
            let mut p = rand::random::<u64>() >> 1;
            while p == 0 || hub.contains_key(&p) {
                p = rand::random::<u64>() >> 1;
            }
            p
        } else if hub.contains_key(&port) {
            return Err(TransportError::Io(io::Error::new(
                io::ErrorKind::AddrInUse,
                "memory port in use",
            )));
        } else {
            port
        };
        let (tx, rx) = mpsc::channel(LISTEN_BACKLOG);
        hub.insert(
            port,
            HubEntry {
                peer: self.local_peer,
                tx,
                datagrams: self.datagrams,
            },
        );
        let id = ListenerId::next();
        self.listeners.insert(id, (port, rx));
        self.events.push_back(TransportEvent::NewListenAddr {
            listener: id,
            addr: Multiaddr::empty().with(Protocol::Memory(port)),
        });
        Ok(id)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match self.listeners.remove(&id) {
            Some((port, _)) => {
                lock(hub()).remove(&port);
                self.events.push_back(TransportEvent::ListenerClosed {
                    listener: id,
                    reason: Ok(()),
                });
                true
            }
            None => false,
        }
    }

    fn dial(
        &mut self,
        addr: &Multiaddr,
        expected: Option<PeerId>,
    ) -> Result<PendingConnection, TransportError> {
        let (bare, expected) = crate::split_peer_id(addr, expected)?;
        let port = Self::port_of(&bare).ok_or(TransportError::UnsupportedAddress {
            addr: addr.clone(),
            reason: "the memory transport dials /memory/<port>",
        })?;
        let local_addr = self.own_addr();
        // Like a QUIC dial sending its first packet at once, the attempt reaches the listener
        // now; the returned future waits for it to be accepted.
        let attempt = {
            let hub = lock(hub());
            match hub.get(&port) {
                None => Err(TransportError::Refused),
                Some(entry) => match expected {
                    Some(expected) if expected != entry.peer => {
                        Err(TransportError::PeerIdMismatch {
                            expected,
                            actual: entry.peer,
                        })
                    }
                    _ => {
                        let datagrams = self.datagrams && entry.datagrams;
                        let (ours, theirs) = MemConnection::pair(datagrams);
                        let (accepted_tx, accepted_rx) = oneshot::channel();
                        entry
                            .tx
                            .try_send(MemIncoming {
                                remote_peer: self.local_peer,
                                remote_addr: local_addr.clone(),
                                conn: theirs,
                                accepted: accepted_tx,
                            })
                            .map_err(|_| TransportError::Refused)
                            .map(|()| (ours, accepted_rx, entry.peer))
                    }
                },
            }
        };
        Ok(Box::pin(async move {
            let (ours, accepted_rx, remote_peer) = attempt?;
            accepted_rx.await.map_err(|_| TransportError::Refused)?;
            Ok(Connection {
                inner: ConnInner::Memory(ours),
                peer: remote_peer,
                remote_addr: bare,
                local_addr,
                direction: Direction::Outbound,
            })
        }))
    }

    fn can_dial(&self, addr: &Multiaddr) -> bool {
        crate::split_peer_id(addr, None)
            .ok()
            .and_then(|(a, _)| Self::port_of(&a))
            .is_some()
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listeners
            .values()
            .map(|(p, _)| Multiaddr::empty().with(Protocol::Memory(*p)))
            .collect()
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        if let Some(ev) = self.events.pop_front() {
            return Poll::Ready(ev);
        }
        for (id, (port, rx)) in self.listeners.iter_mut() {
            if let Poll::Ready(Some(inc)) = rx.poll_recv(cx) {
                let local_addr = Multiaddr::empty().with(Protocol::Memory(*port));
                let remote_addr = inc.remote_addr.clone();
                let conn = Connection {
                    inner: ConnInner::Memory(inc.conn),
                    peer: inc.remote_peer,
                    remote_addr: inc.remote_addr,
                    local_addr: local_addr.clone(),
                    direction: Direction::Inbound,
                };
                let accepted = inc.accepted;
                return Poll::Ready(TransportEvent::Incoming {
                    listener: *id,
                    local_addr,
                    remote_addr,
                    upgrade: Box::pin(async move {
                        accepted.send(()).map_err(|_| TransportError::Refused)?;
                        Ok(conn)
                    }),
                });
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::in_memory::PIPE_CAPACITY;
    use crate::connection::{CloseReason, ConnectionError};
    use crate::TransportExt;
    use bytes::Bytes;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use meshwire_core::Keypair;

    async fn connected() -> (MemoryTransport, MemoryTransport, Connection, Connection) {
        let mut a = MemoryTransport::new(Keypair::generate().peer_id());
        let mut b = MemoryTransport::new(Keypair::generate().peer_id());
        a.listen_on("/memory/0".parse().unwrap()).unwrap();
        let TransportEvent::NewListenAddr { addr, .. } = a.next_event().await else {
            panic!()
        };
        let dial = b.dial(&addr, None).unwrap();
        let TransportEvent::Incoming { upgrade, .. } = a.next_event().await else {
            panic!()
        };
        let (o, i) = tokio::join!(dial, upgrade);
        (a, b, o.unwrap(), i.unwrap())
    }

    #[tokio::test]
    async fn streams_carry_data_both_ways_with_backpressure() {
        let (_a, _b, out, inc) = connected().await;
        let payload: Vec<u8> = (0..3 * PIPE_CAPACITY).map(|i| i as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            let mut s = out.open_stream().await.unwrap();
            s.write_all(&p2).await.unwrap();
            s.close().await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut s = inc.accept_stream().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload);
        s.write_all(b"done").await.unwrap();
        s.close().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"done");
    }

    #[tokio::test]
    async fn close_resets_streams_and_reports_reasons_on_both_sides() {
        let (_a, _b, out, inc) = connected().await;
        let mut s = out.open_stream().await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut r = inc.accept_stream().await.unwrap();
        out.close(7, "bye");
        let mut buf = [0u8; 8];
        assert!(r.read(&mut buf).await.is_err());
        assert_eq!(
            inc.closed().await,
            CloseReason::Remote {
                code: 7,
                reason: "bye".into()
            }
        );
        assert_eq!(
            out.close_reason(),
            Some(CloseReason::Local {
                code: 7,
                reason: "bye".into()
            })
        );
        assert!(matches!(
            inc.open_stream().await,
            Err(ConnectionError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn dial_checks_peer_id_and_refuses_unknown_ports() {
        let mut a = MemoryTransport::new(Keypair::generate().peer_id());
        a.listen_on("/memory/0".parse().unwrap()).unwrap();
        let TransportEvent::NewListenAddr { addr, .. } = a.next_event().await else {
            panic!()
        };
        let mut b = MemoryTransport::new(Keypair::generate().peer_id());
        let wrong = Keypair::generate().peer_id();
        match b.dial(&addr, Some(wrong)).unwrap().await {
            Err(TransportError::PeerIdMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, a.local_peer_id());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.dial(&"/memory/1".parse().unwrap(), None).unwrap().await,
            Err(TransportError::Refused)
        ));
        assert!(b
            .dial(&"/ip4/1.2.3.4/tcp/1".parse().unwrap(), None)
            .is_err());
    }

    #[tokio::test]
    async fn datagrams_are_delivered_and_bounded() {
        let (_a, _b, out, inc) = connected().await;
        out.send_datagram(Bytes::from_static(b"ping")).unwrap();
        assert_eq!(
            inc.read_datagram().await.unwrap(),
            Bytes::from_static(b"ping")
        );
        assert!(matches!(
            out.send_datagram(Bytes::from(vec![0u8; MAX_MEMORY_DATAGRAM + 1])),
            Err(ConnectionError::DatagramTooLarge { .. })
        ));
    }

    async fn connected_with(
        a: MemoryTransport,
        b: MemoryTransport,
    ) -> (MemoryTransport, MemoryTransport, Connection, Connection) {
        let (mut a, mut b) = (a, b);
        a.listen_on("/memory/0".parse().unwrap()).unwrap();
        let TransportEvent::NewListenAddr { addr, .. } = a.next_event().await else {
            panic!()
        };
        let dial = b.dial(&addr, None).unwrap();
        let TransportEvent::Incoming { upgrade, .. } = a.next_event().await else {
            panic!()
        };
        let (o, i) = tokio::join!(dial, upgrade);
        (a, b, o.unwrap(), i.unwrap())
    }

    #[tokio::test]
    async fn without_datagrams_on_either_side_the_connection_has_none_but_streams() {
        let plain = || MemoryTransport::new(Keypair::generate().peer_id());
        for (listener, dialer) in [
            (plain().without_datagrams(), plain()),
            (plain(), plain().without_datagrams()),
        ] {
            let (_a, _b, out, inc) = connected_with(listener, dialer).await;
            for c in [&out, &inc] {
                assert_eq!(c.max_datagram_size(), None);
                assert!(matches!(
                    c.send_datagram(Bytes::from_static(b"x")),
                    Err(ConnectionError::DatagramsUnsupported)
                ));
                // Fails at once instead of waiting for datagrams that never come.
                let read =
                    tokio::time::timeout(std::time::Duration::from_secs(5), c.read_datagram())
                        .await
                        .expect("read_datagram returns at once");
                assert!(matches!(read, Err(ConnectionError::DatagramsUnsupported)));
            }
            // Streams work as usual.
            let mut s = out.open_stream().await.unwrap();
            s.write_all(b"hi").await.unwrap();
            s.close().await.unwrap();
            let mut got = Vec::new();
            inc.accept_stream()
                .await
                .unwrap()
                .read_to_end(&mut got)
                .await
                .unwrap();
            assert_eq!(got, b"hi");
            // Closed wins over unsupported.
            out.close(0, "bye");
            assert!(matches!(
                out.send_datagram(Bytes::from_static(b"x")),
                Err(ConnectionError::Closed(_))
            ));
        }
        // The default keeps datagrams.
        let (_a, _b, out, _inc) = connected_with(plain(), plain()).await;
        assert_eq!(out.max_datagram_size(), Some(MAX_MEMORY_DATAGRAM));
    }
}
