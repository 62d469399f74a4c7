//! Established, authenticated connections and their streams.
//!
//! A [`Connection`] is a cheap, cloneable handle. Over QUIC it wraps the `quinn::Connection`
//! itself and a [`Stream`] wraps the quinn send/receive halves directly, so reads and writes go
//! straight to quinn with one `match` of overhead and no extra task or channel. In-memory
//! connections (from [`crate::memory::MemoryTransport`]) are backed by the `in_memory` pipes
//! next to this module, and Yamux connections (from [`crate::upgrade`]: Noise + Yamux over any
//! byte stream, e.g. a relayed circuit) by the [`yamux`] driver, so the connection types never
//! depend on a transport.

mod error;
pub(crate) mod in_memory;
pub mod yamux;

pub use self::yamux::YamuxConnection;
pub use error::{CloseReason, ConnectionError, CLOSE_CODE_NORMAL};

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::io::{AsyncRead, AsyncWrite};
use meshwire_core::{Direction, PeerId};
use multiaddr::Multiaddr;

use self::yamux::YamuxStream;
use crate::multistream::{self, Negotiated, Version};
use in_memory::{MemConnection, MemStream};

#[derive(Clone, Debug)]
pub(crate) enum ConnInner {
    Quic(quinn::Connection),
    Memory(MemConnection),
    Yamux(YamuxConnection),
}

/// An established connection to an authenticated peer.
///
/// Clone it freely: all clones refer to the same connection. The connection stays open until
/// [`Connection::close`] is called, the peer closes it, it idles out, or the last handle to it
/// is dropped.
#[derive(Clone, Debug)]
pub struct Connection {
    pub(crate) inner: ConnInner,
    pub(crate) peer: PeerId,
    pub(crate) remote_addr: Multiaddr,
    pub(crate) local_addr: Multiaddr,
    pub(crate) direction: Direction,
}

impl Connection {
    /// The authenticated identity of the remote peer.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The remote's address as seen from here (its observed address), e.g.
    /// `/ip4/203.0.113.5/udp/4001/quic-v1`.
    pub fn remote_addr(&self) -> &Multiaddr {
        &self.remote_addr
    }

    /// The local address this connection uses.
    pub fn local_addr(&self) -> &Multiaddr {
        &self.local_addr
    }

    /// Whether we dialed ([`Direction::Outbound`]) or accepted it.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the connection goes through a relay: its remote address is a circuit address,
    /// `<relay addr>/p2p/<relay>/p2p-circuit[/p2p/<peer>]`.
    pub fn is_relayed(&self) -> bool {
        crate::is_circuit_addr(&self.remote_addr)
    }

    /// The relay of a relayed connection: the `/p2p/<relay>` right before `/p2p-circuit` in
    /// the remote address. `None` for a direct connection or a circuit address without it.
    pub fn relay_peer_id(&self) -> Option<PeerId> {
        crate::circuit_relay(&self.remote_addr)
    }

    /// Opens a new bidirectional stream. Waits while the peer's stream limit is reached.
    pub async fn open_stream(&self) -> Result<Stream, ConnectionError> {
        match &self.inner {
            ConnInner::Quic(c) => {
                let (send, recv) = c.open_bi().await?;
                Ok(Stream {
                    inner: StreamInner::Quic { send, recv },
                })
            }
            ConnInner::Memory(m) => m.open_stream().await.map(|s| Stream {
                inner: StreamInner::Memory(s),
            }),
            ConnInner::Yamux(y) => y.open_stream().await.map(|s| Stream {
                inner: StreamInner::Yamux(Box::new(s)),
            }),
        }
    }

    /// Waits for the peer to open a bidirectional stream.
    pub async fn accept_stream(&self) -> Result<Stream, ConnectionError> {
        match &self.inner {
            ConnInner::Quic(c) => {
                let (send, recv) = c.accept_bi().await?;
                Ok(Stream {
                    inner: StreamInner::Quic { send, recv },
                })
            }
            ConnInner::Memory(m) => m.accept_stream().await.map(|s| Stream {
                inner: StreamInner::Memory(s),
            }),
            ConnInner::Yamux(y) => y.accept_stream().await.map(|s| Stream {
                inner: StreamInner::Yamux(Box::new(s)),
            }),
        }
    }

    /// Opens a stream and negotiates one of `protocols` with multistream-select as the dialer.
    /// With a single protocol the negotiation is lazy: no round trip before the first write.
    pub async fn open_negotiated<I, P>(
        &self,
        protocols: I,
        timeout: Duration,
    ) -> Result<(String, Negotiated<Stream>), ConnectionError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let stream = self.open_stream().await?;
        let protocols: Vec<String> = protocols
            .into_iter()
            .map(|p| p.as_ref().to_owned())
            .collect();
        let fut = multistream::dialer_select(stream, protocols, Version::V1Lazy);
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ConnectionError::NegotiationTimeout),
        }
    }

    /// Accepts the peer's next stream and negotiates it as the listener, accepting any of
    /// `supported`.
    pub async fn accept_negotiated<P: AsRef<str>>(
        &self,
        supported: &[P],
        timeout: Duration,
    ) -> Result<(String, Negotiated<Stream>), ConnectionError> {
        let stream = self.accept_stream().await?;
        match tokio::time::timeout(timeout, multistream::listener_select(stream, supported)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ConnectionError::NegotiationTimeout),
        }
    }

    /// Closes the connection with an application code and reason. Open streams are reset.
    pub fn close(&self, code: u32, reason: &str) {
        match &self.inner {
            ConnInner::Quic(c) => c.close(quinn::VarInt::from_u32(code), reason.as_bytes()),
            ConnInner::Memory(m) => m.close(code, reason),
            ConnInner::Yamux(y) => y.close(code, reason),
        }
    }

    /// Waits until the connection is closed and tells why.
    pub async fn closed(&self) -> CloseReason {
        match &self.inner {
            ConnInner::Quic(c) => c.closed().await.into(),
            ConnInner::Memory(m) => m.closed().await,
            ConnInner::Yamux(y) => y.closed().await,
        }
    }

    /// Why the connection closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match &self.inner {
            ConnInner::Quic(c) => c.close_reason().map(Into::into),
            ConnInner::Memory(m) => m.close_reason(),
            ConnInner::Yamux(y) => y.close_reason(),
        }
    }

    /// Sends an unreliable datagram (QUIC DATAGRAM frame). Datagrams can be lost, duplicated
    /// never, reordered yes; see [`Connection::max_datagram_size`].
    pub fn send_datagram(&self, data: Bytes) -> Result<(), ConnectionError> {
        match &self.inner {
            ConnInner::Quic(c) => c.send_datagram(data).map_err(|e| match e {
                quinn::SendDatagramError::UnsupportedByPeer
                | quinn::SendDatagramError::Disabled => ConnectionError::DatagramsUnsupported,
                quinn::SendDatagramError::TooLarge => ConnectionError::DatagramTooLarge {
                    max: c.max_datagram_size().unwrap_or(0),
                },
                quinn::SendDatagramError::ConnectionLost(e) => e.into(),
            }),
            ConnInner::Memory(m) => m.send_datagram(data),
            ConnInner::Yamux(_) => Err(ConnectionError::DatagramsUnsupported),
        }
    }

    /// Waits for the next datagram from the peer. Yamux connections and in-memory connections
    /// without datagrams ([`MemoryTransport::without_datagrams`](crate::memory::MemoryTransport::without_datagrams))
    /// have none: they fail at once with [`ConnectionError::DatagramsUnsupported`].
    pub async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        match &self.inner {
            ConnInner::Quic(c) => Ok(c.read_datagram().await?),
            ConnInner::Memory(m) => m.read_datagram().await,
            ConnInner::Yamux(_) => Err(ConnectionError::DatagramsUnsupported),
        }
    }

    /// The largest datagram that can be sent now, or `None` if datagrams are unsupported.
    pub fn max_datagram_size(&self) -> Option<usize> {
        match &self.inner {
            ConnInner::Quic(c) => c.max_datagram_size(),
            ConnInner::Memory(m) => m.max_datagram_size(),
            ConnInner::Yamux(_) => None,
        }
    }

    /// The transport's current round-trip estimate: quinn's for QUIC, zero for in-memory
    /// connections, and for Yamux connections the round trip measured once during the Noise
    /// handshake (from sending our message to receiving the peer's next one; it is not
    /// updated afterwards).
    pub fn rtt(&self) -> Duration {
        match &self.inner {
            ConnInner::Quic(c) => c.rtt(),
            ConnInner::Memory(_) => Duration::ZERO,
            ConnInner::Yamux(y) => y.rtt(),
        }
    }

    /// The underlying quinn connection, for QUIC connections.
    pub fn as_quic(&self) -> Option<&quinn::Connection> {
        match &self.inner {
            ConnInner::Quic(c) => Some(c),
            ConnInner::Memory(_) | ConnInner::Yamux(_) => None,
        }
    }

    /// What the peer can make this connection buffer, in bytes, when the transport does not
    /// size that from the resource manager's connection reservation: `Some` for Yamux
    /// connections (their receive window plus the Noise buffers), `None` for QUIC (whose
    /// windows come from the limits, see `QuicConfig`) and in-memory ones. The swarm reserves
    /// the difference in the connection's resource scope once the connection is established.
    pub fn receive_buffer_limit(&self) -> Option<u64> {
        match &self.inner {
            ConnInner::Yamux(y) => Some(y.receive_buffer_limit()),
            ConnInner::Quic(_) | ConnInner::Memory(_) => None,
        }
    }

    /// The Yamux backend, for connections made by [`crate::upgrade`].
    pub fn as_yamux(&self) -> Option<&YamuxConnection> {
        match &self.inner {
            ConnInner::Yamux(y) => Some(y),
            ConnInner::Quic(_) | ConnInner::Memory(_) => None,
        }
    }
}

#[derive(Debug)]
enum StreamInner {
    Quic {
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    },
    Memory(MemStream),
    /// Boxed: a yamux stream is several times the size of quinn's halves, and `Stream` sits
    /// in every behaviour's futures.
    Yamux(Box<YamuxStream>),
    /// Moved out by [`Stream::detach`]: reads end, writes fail with `NotConnected`.
    Detached,
}

/// A bidirectional byte stream on a [`Connection`]: `futures::io::{AsyncRead, AsyncWrite}`.
///
/// `poll_close` finishes the write side (the peer reads end-of-stream); reading goes on until
/// the peer finishes its side. Dropping the stream without closing it finishes the write side gracefully
/// over QUIC (quinn's behaviour, as in rust-libp2p); call [`Stream::reset`] to abort.
///
/// Over Yamux, dropping an open stream resets it (yamux's behaviour), and a peer's reset reads
/// as end of stream while writes fail (`WriteZero`), as the `yamux` crate reports it.
#[derive(Debug)]
pub struct Stream {
    inner: StreamInner,
}

impl Stream {
    /// Resets both directions: the peer's reads and writes fail (over Yamux: its reads end,
    /// its writes fail; this side's later reads and writes fail with `ConnectionReset`).
    pub fn reset(&mut self) {
        match &mut self.inner {
            StreamInner::Quic { send, recv } => {
                let _ = send.reset(quinn::VarInt::from_u32(0));
                let _ = recv.stop(quinn::VarInt::from_u32(0));
            }
            StreamInner::Memory(m) => m.reset(),
            StreamInner::Yamux(y) => y.reset(),
            StreamInner::Detached => {}
        }
    }

    /// Moves the stream out of this handle and returns it, leaving this handle detached:
    /// its reads end at once, its writes, flushes and closes fail with
    /// [`io::ErrorKind::NotConnected`], and dropping it does nothing. For a caller that must hand the stream to another task from
    /// a `Drop` (the swarm's bounded drain of a stream dropped before its remote answered).
    pub fn detach(&mut self) -> Stream {
        Stream {
            inner: std::mem::replace(&mut self.inner, StreamInner::Detached),
        }
    }

    /// Whether dropping this stream ends its write side gracefully, as [`AsyncWrite::poll_close`]
    /// does (QUIC: quinn finishes it; in-memory streams likewise), rather than resetting it
    /// (Yamux). `false` for a [detached](Stream::detach) handle.
    pub fn drop_finishes(&self) -> bool {
        match self.inner {
            StreamInner::Quic { .. } | StreamInner::Memory(_) => true,
            StreamInner::Yamux(_) | StreamInner::Detached => false,
        }
    }

    /// The quinn halves of a QUIC stream, for callers that want quinn's own API.
    pub fn into_quic(self) -> Result<(quinn::SendStream, quinn::RecvStream), Stream> {
        match self.inner {
            StreamInner::Quic { send, recv } => Ok((send, recv)),
            other => Err(Stream { inner: other }),
        }
    }
}

/// The error of a write to a [detached](Stream::detach) handle.
fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the stream was moved out of this handle",
    )
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            StreamInner::Quic { recv, .. } => AsyncRead::poll_read(Pin::new(recv), cx, buf),
            StreamInner::Memory(m) => Pin::new(m).poll_read(cx, buf),
            StreamInner::Yamux(y) => Pin::new(&mut **y).poll_read(cx, buf),
            StreamInner::Detached => Poll::Ready(Ok(0)),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            StreamInner::Quic { send, .. } => AsyncWrite::poll_write(Pin::new(send), cx, buf),
            StreamInner::Memory(m) => Pin::new(m).poll_write(cx, buf),
            StreamInner::Yamux(y) => Pin::new(&mut **y).poll_write(cx, buf),
            StreamInner::Detached => Poll::Ready(Err(detached())),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            StreamInner::Quic { send, .. } => AsyncWrite::poll_flush(Pin::new(send), cx),
            StreamInner::Memory(m) => Pin::new(m).poll_flush(cx),
            StreamInner::Yamux(y) => Pin::new(&mut **y).poll_flush(cx),
            StreamInner::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            StreamInner::Quic { send, .. } => AsyncWrite::poll_close(Pin::new(send), cx),
            StreamInner::Memory(m) => Pin::new(m).poll_close(cx),
            StreamInner::Yamux(y) => Pin::new(&mut **y).poll_close(cx),
            StreamInner::Detached => Poll::Ready(Err(detached())),
        }
    }
}
