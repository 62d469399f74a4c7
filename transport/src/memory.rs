//! An in-process transport with the same [`Transport`] trait as QUIC, for fast, deterministic
//! tests of the layers above (swarm, behaviours) with no sockets.
//!
//! Addresses are `/memory/<port>`; `/memory/0` picks a free port. Peers are authenticated by
//! the process-wide hub (it knows each listener's [`PeerId`]), streams are bounded in-memory
//! pipes with backpressure, datagrams are bounded queues that drop when full.
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
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::io::{AsyncRead, AsyncWrite};
use meshwire_core::{Direction, PeerId};
use multiaddr::{Multiaddr, Protocol};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::connection::{CloseReason, ConnInner, Connection, ConnectionError};
use crate::{ListenerId, PendingConnection, Transport, TransportError, TransportEvent};

/// Largest datagram an in-memory connection carries (the same order as a QUIC path).
pub const MAX_MEMORY_DATAGRAM: usize = 1200;
/// Bytes buffered per stream direction before the writer waits.
const PIPE_CAPACITY: usize = 256 * 1024;
/// Streams opened but not yet accepted, per connection direction.
const MAX_PENDING_STREAMS: usize = 256;
/// Datagrams queued before new ones are dropped.
const DATAGRAM_QUEUE: usize = 256;
/// Connection attempts queued at a listener before dials are refused.
const LISTEN_BACKLOG: usize = 128;

struct HubEntry {
    peer: PeerId,
    tx: mpsc::Sender<MemIncoming>,
}

fn hub() -> &'static Mutex<HashMap<u64, HubEntry>> {
    static HUB: OnceLock<Mutex<HashMap<u64, HubEntry>>> = OnceLock::new();
    HUB.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
}

impl MemoryTransport {
    /// A transport that authenticates as `local_peer`.
    pub fn new(local_peer: PeerId) -> Self {
        MemoryTransport {
            local_peer,
            listeners: HashMap::new(),
            events: VecDeque::new(),
        }
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
                        let (ours, theirs) = MemConnection::pair();
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

/// State shared by the two ends of one in-memory connection.
struct ConnShared {
    /// `(side that closed, code, reason)` once closed.
    closed: Mutex<Option<(usize, u32, String)>>,
    notify: Notify,
    pipes: Mutex<Vec<Weak<Mutex<Pipe>>>>,
}

impl ConnShared {
    fn reason_for(&self, side: usize) -> Option<CloseReason> {
        lock(&self.closed).as_ref().map(|(closer, code, reason)| {
            if *closer == side {
                CloseReason::Local {
                    code: *code,
                    reason: reason.clone(),
                }
            } else {
                CloseReason::Remote {
                    code: *code,
                    reason: reason.clone(),
                }
            }
        })
    }
}

/// One end of an in-memory connection.
#[derive(Clone)]
pub(crate) struct MemConnection {
    side: usize,
    shared: Arc<ConnShared>,
    open_tx: mpsc::Sender<MemStream>,
    accept_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<MemStream>>>,
    dgram_tx: mpsc::Sender<Bytes>,
    dgram_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
}

impl std::fmt::Debug for MemConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemConnection")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl MemConnection {
    fn pair() -> (MemConnection, MemConnection) {
        let shared = Arc::new(ConnShared {
            closed: Mutex::new(None),
            notify: Notify::new(),
            pipes: Mutex::new(Vec::new()),
        });
        let (s0_tx, s0_rx) = mpsc::channel(MAX_PENDING_STREAMS);
        let (s1_tx, s1_rx) = mpsc::channel(MAX_PENDING_STREAMS);
        let (d0_tx, d0_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let (d1_tx, d1_rx) = mpsc::channel(DATAGRAM_QUEUE);
        let a = MemConnection {
            side: 0,
            shared: shared.clone(),
            open_tx: s1_tx,
            accept_rx: Arc::new(tokio::sync::Mutex::new(s0_rx)),
            dgram_tx: d1_tx,
            dgram_rx: Arc::new(tokio::sync::Mutex::new(d0_rx)),
        };
        let b = MemConnection {
            side: 1,
            shared,
            open_tx: s0_tx,
            accept_rx: Arc::new(tokio::sync::Mutex::new(s1_rx)),
            dgram_tx: d0_tx,
            dgram_rx: Arc::new(tokio::sync::Mutex::new(d1_rx)),
        };
        (a, b)
    }

    fn check_open(&self) -> Result<(), ConnectionError> {
        match self.shared.reason_for(self.side) {
            Some(r) => Err(ConnectionError::Closed(r)),
            None => Ok(()),
        }
    }

    pub(crate) async fn open_stream(&self) -> Result<MemStream, ConnectionError> {
        self.check_open()?;
        let a_to_b = Arc::new(Mutex::new(Pipe::default()));
        let b_to_a = Arc::new(Mutex::new(Pipe::default()));
        {
            let mut pipes = lock(&self.shared.pipes);
            pipes.retain(|w| w.strong_count() > 0);
            pipes.push(Arc::downgrade(&a_to_b));
            pipes.push(Arc::downgrade(&b_to_a));
        }
        let ours = MemStream {
            read: b_to_a.clone(),
            write: a_to_b.clone(),
        };
        let theirs = MemStream {
            read: a_to_b,
            write: b_to_a,
        };
        tokio::select! {
            r = self.open_tx.send(theirs) => r.map_err(|_| ConnectionError::Closed(self.closed_reason_or_transport()))?,
            _ = self.wait_closed() => return Err(ConnectionError::Closed(self.closed_reason_or_transport())),
        }
        Ok(ours)
    }

    fn closed_reason_or_transport(&self) -> CloseReason {
        self.shared
            .reason_for(self.side)
            .unwrap_or(CloseReason::Transport("peer gone".into()))
    }

    async fn wait_closed(&self) {
        loop {
            let notified = self.shared.notify.notified();
            if lock(&self.shared.closed).is_some() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) async fn accept_stream(&self) -> Result<MemStream, ConnectionError> {
        self.check_open()?;
        let mut rx = self.accept_rx.lock().await;
        tokio::select! {
            s = rx.recv() => s.ok_or_else(|| ConnectionError::Closed(self.closed_reason_or_transport())),
            _ = self.wait_closed() => Err(ConnectionError::Closed(self.closed_reason_or_transport())),
        }
    }

    pub(crate) fn close(&self, code: u32, reason: &str) {
        {
            let mut closed = lock(&self.shared.closed);
            if closed.is_some() {
                return;
            }
            *closed = Some((self.side, code, reason.to_owned()));
        }
        for pipe in lock(&self.shared.pipes).drain(..) {
            if let Some(p) = pipe.upgrade() {
                lock(&p).reset();
            }
        }
        self.shared.notify.notify_waiters();
    }

    pub(crate) async fn closed(&self) -> CloseReason {
        self.wait_closed().await;
        self.closed_reason_or_transport()
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason_for(self.side)
    }

    pub(crate) fn send_datagram(&self, data: Bytes) -> Result<(), ConnectionError> {
        self.check_open()?;
        if data.len() > MAX_MEMORY_DATAGRAM {
            return Err(ConnectionError::DatagramTooLarge {
                max: MAX_MEMORY_DATAGRAM,
            });
        }
        // Unreliable: a full queue drops the datagram, as a congested path would.
        let _ = self.dgram_tx.try_send(data);
        Ok(())
    }

    pub(crate) async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        self.check_open()?;
        let mut rx = self.dgram_rx.lock().await;
        tokio::select! {
            d = rx.recv() => d.ok_or_else(|| ConnectionError::Closed(self.closed_reason_or_transport())),
            _ = self.wait_closed() => Err(ConnectionError::Closed(self.closed_reason_or_transport())),
        }
    }
}

/// One direction of a stream.
#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    /// The writer finished: the reader sees end-of-stream after the buffer.
    finished: bool,
    /// Reset (or the connection closed): both ends fail.
    reset: bool,
    /// The reader is gone: the writer fails.
    reader_gone: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Pipe {
    fn reset(&mut self) {
        self.reset = true;
        self.wake_all();
    }

    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// A stream of an in-memory connection.
pub(crate) struct MemStream {
    read: Arc<Mutex<Pipe>>,
    write: Arc<Mutex<Pipe>>,
}

impl std::fmt::Debug for MemStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStream").finish_non_exhaustive()
    }
}

impl MemStream {
    pub(crate) fn reset(&mut self) {
        lock(&self.read).reset();
        lock(&self.write).reset();
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "stream reset")
}

impl AsyncRead for MemStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.read);
        if p.reset {
            return Poll::Ready(Err(reset_error()));
        }
        if !p.buf.is_empty() {
            let n = buf.len().min(p.buf.len());
            for (dst, src) in buf.iter_mut().zip(p.buf.drain(..n)) {
                *dst = src;
            }
            if let Some(w) = p.write_waker.take() {
                w.wake();
            }
            return Poll::Ready(Ok(n));
        }
        if p.finished || buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        p.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for MemStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.write);
        if p.reset {
            return Poll::Ready(Err(reset_error()));
        }
        if p.reader_gone {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "peer stopped reading",
            )));
        }
        if p.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream already closed",
            )));
        }
        let space = PIPE_CAPACITY - p.buf.len();
        if space == 0 {
            p.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(buf.len());
        p.buf.extend(&buf[..n]);
        if let Some(w) = p.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if lock(&self.write).reset {
            return Poll::Ready(Err(reset_error()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = lock(&self.write);
        if p.reset {
            return Poll::Ready(Err(reset_error()));
        }
        p.finished = true;
        if let Some(w) = p.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        // Like QUIC: dropping finishes our sending side and stops the peer's.
        {
            let mut w = lock(&self.write);
            w.finished = true;
            if let Some(wk) = w.read_waker.take() {
                wk.wake();
            }
        }
        let mut r = lock(&self.read);
        r.reader_gone = true;
        if let Some(wk) = r.write_waker.take() {
            wk.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransportExt;
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
}
