//! Upgrading any byte stream into an authenticated, multiplexed [`Connection`]: libp2p's
//! Noise + Yamux stack, exactly as rust-libp2p runs it over TCP and relayed circuits.
//!
//! The steps, each wire-compatible with rust-libp2p 0.57 and go-libp2p:
//!
//! 1. multistream-select [`noise::PROTOCOL`] (`/noise`): the dialer uses [`Version::V1`]
//!    (it waits for the listener's confirmation); the listener accepts V1 and V1Lazy dialers
//!    (rust-libp2p dials with V1Lazy).
//! 2. the libp2p Noise XX handshake ([`noise`]): both identities are authenticated; the dialer
//!    checks the listener against `expected` ([`TransportError::PeerIdMismatch`]).
//! 3. multistream-select [`YAMUX_PROTOCOL`] (`/yamux/1.0.0`) over the encrypted stream.
//! 4. Yamux (the `yamux` crate, the version rust-libp2p 0.57 uses), run by a driver task: see
//!    [`crate::connection::yamux`] for the connection's lifetime, close and stream semantics.
//!
//! The whole upgrade is bounded by [`UpgradeConfig::handshake_timeout`]
//! ([`TransportError::HandshakeTimeout`]). The caller supplies the addresses: for a relayed
//! connection the remote address is the circuit address
//! (`<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>`), which
//! [`Connection::is_relayed`] and [`Connection::relay_peer_id`] read. The stream handed in
//! must be positioned at the start of the upgrade (nothing of it read ahead).
//!
//! Connections made here have no datagrams
//! ([`ConnectionError::DatagramsUnsupported`](crate::ConnectionError::DatagramsUnsupported)),
//! and their [`Connection::rtt`] is the round trip measured during the Noise handshake.
//! The functions spawn the driver with `tokio::spawn`, so they must run inside a tokio
//! runtime.
//!
//! # Memory bounds
//!
//! Per connection: the Noise buffers (about 256 KiB), at most
//! [`YamuxConfig::max_connection_receive_window`] bytes of received stream data (yamux gives
//! every stream a 256 KiB window by protocol, so the window must be at least 256 KiB ×
//! [`YamuxConfig::max_num_streams`]), and at most
//! [`UpgradeConfig::max_inbound_streams_pending`] streams waiting to be accepted.
//!
//! ```
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! use meshwire_transport::identity::Keypair;
//! use meshwire_transport::upgrade::{upgrade_inbound, upgrade_outbound, UpgradeConfig};
//! use tokio_util::compat::TokioAsyncReadCompatExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let (alice, bob) = (Keypair::generate(), Keypair::generate());
//! let cfg = UpgradeConfig::default();
//! let addr: meshwire_transport::Multiaddr = "/memory/1".parse()?;
//! let (dialer, listener) = tokio::join!(
//!     upgrade_outbound(a.compat(), &alice, Some(bob.peer_id()), addr.clone(), addr.clone(), &cfg),
//!     upgrade_inbound(b.compat(), &bob, addr.clone(), addr, &cfg),
//! );
//! let (dialer, listener) = (dialer?, listener?);
//! assert_eq!(dialer.peer_id(), bob.peer_id());
//! assert_eq!(listener.peer_id(), alice.peer_id());
//!
//! let mut s = dialer.open_stream().await?;
//! s.write_all(b"hi").await?;
//! s.close().await?;
//! let mut t = listener.accept_stream().await?;
//! let mut got = Vec::new();
//! t.read_to_end(&mut got).await?;
//! assert_eq!(got, b"hi");
//! # Ok(()) }
//! ```

pub mod noise;

#[cfg(test)]
mod tests;

use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use meshwire_core::{Direction, Keypair, PeerId};
use multiaddr::Multiaddr;

use crate::connection::yamux::{YamuxConnection, YamuxParams};
use crate::connection::{ConnInner, Connection};
use crate::multistream::{self, NegotiationError, Version};
use crate::TransportError;

/// The multistream-select protocol id of Yamux.
pub const YAMUX_PROTOCOL: &str = "/yamux/1.0.0";

/// The initial receive window of every yamux stream (256 KiB), fixed by the yamux spec.
pub const YAMUX_STREAM_WINDOW: usize = 256 * 1024;

/// The Yamux settings exposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamuxConfig {
    /// Streams open at once on a connection (default 64). Opening more fails with
    /// [`ConnectionError::StreamLimit`](crate::ConnectionError::StreamLimit); a peer opening
    /// more makes yamux end the connection (GoAway, internal error), as in rust-libp2p.
    pub max_num_streams: usize,
    /// Receive buffer of all streams of a connection together, in bytes (default 16 MiB:
    /// 64 × 256 KiB). Must be at least [`YAMUX_STREAM_WINDOW`] × `max_num_streams`. This is
    /// what a peer can make us buffer on one connection, so it is kept well below yamux's own
    /// default (unbounded); a relayed connection through a public relay carries far less
    /// anyway (128 KiB per circuit by default).
    pub max_connection_receive_window: usize,
}

impl Default for YamuxConfig {
    fn default() -> Self {
        YamuxConfig {
            max_num_streams: 64,
            max_connection_receive_window: 64 * YAMUX_STREAM_WINDOW,
        }
    }
}

impl YamuxConfig {
    /// The `yamux::Config`, or why these settings cannot make one.
    fn to_yamux(&self) -> Result<yamux::Config, TransportError> {
        if self.max_num_streams == 0 {
            return Err(TransportError::InvalidConfig(
                "yamux max_num_streams must be at least 1".into(),
            ));
        }
        let floor = self.max_num_streams.checked_mul(YAMUX_STREAM_WINDOW);
        if floor.is_none_or(|f| self.max_connection_receive_window < f) {
            return Err(TransportError::InvalidConfig(format!(
                "yamux max_connection_receive_window ({}) must be at least {YAMUX_STREAM_WINDOW} × max_num_streams ({})",
                self.max_connection_receive_window, self.max_num_streams
            )));
        }
        let mut cfg = yamux::Config::default();
        // yamux checks each setter against the other: lift the window first.
        cfg.set_max_connection_receive_window(None);
        cfg.set_max_num_streams(self.max_num_streams);
        cfg.set_max_connection_receive_window(Some(self.max_connection_receive_window));
        Ok(cfg)
    }
}

/// Settings of [`upgrade_outbound`] and [`upgrade_inbound`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// Time for the whole upgrade: both negotiations and the Noise handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Inbound streams waiting for `accept_stream` (default 32; 0 counts as 1); a stream
    /// arriving while this many wait is reset and counted
    /// ([`YamuxConnection::inbound_streams_dropped`]).
    pub max_inbound_streams_pending: usize,
    /// Time a closing connection may take to flush its GoAway and close the underlying stream
    /// before it is dropped (default 5 s).
    pub close_timeout: Duration,
    /// The Yamux settings.
    pub yamux: YamuxConfig,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            handshake_timeout: Duration::from_secs(10),
            max_inbound_streams_pending: 32,
            close_timeout: Duration::from_secs(5),
            yamux: YamuxConfig::default(),
        }
    }
}

/// Upgrades a stream we opened (we are the dialer, Noise initiator and Yamux client).
///
/// With `expected`, a peer authenticating as anyone else fails with
/// [`TransportError::PeerIdMismatch`]. See the module docs for the steps and bounds.
pub async fn upgrade_outbound<S>(
    io: S,
    local: &Keypair,
    expected: Option<PeerId>,
    local_addr: Multiaddr,
    remote_addr: Multiaddr,
    cfg: &UpgradeConfig,
) -> Result<Connection, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let yamux = cfg.yamux.to_yamux()?;
    let steps = async {
        let io = complete(multistream::dialer_select(io, [noise::PROTOCOL], Version::V1).await?)?;
        let (peer, io) = noise::handshake_outbound(io, local, expected).await?;
        let rtt = io.handshake_rtt();
        let io = complete(multistream::dialer_select(io, [YAMUX_PROTOCOL], Version::V1).await?)?;
        Ok::<_, TransportError>((peer, io, rtt))
    };
    let (peer, io, rtt) = tokio::time::timeout(cfg.handshake_timeout, steps)
        .await
        .map_err(|_| TransportError::HandshakeTimeout)??;
    Ok(connection(
        YamuxConnection::spawn(io, ::yamux::Mode::Client, params(cfg, yamux, rtt)),
        peer,
        local_addr,
        remote_addr,
        Direction::Outbound,
    ))
}

/// Upgrades a stream the peer opened (we are the listener, Noise responder and Yamux
/// server). See the module docs for the steps and bounds.
pub async fn upgrade_inbound<S>(
    io: S,
    local: &Keypair,
    local_addr: Multiaddr,
    remote_addr: Multiaddr,
    cfg: &UpgradeConfig,
) -> Result<Connection, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let yamux = cfg.yamux.to_yamux()?;
    let steps = async {
        let io = complete(multistream::listener_select(io, &[noise::PROTOCOL]).await?)?;
        let (peer, io) = noise::handshake_inbound(io, local).await?;
        let rtt = io.handshake_rtt();
        let io = complete(multistream::listener_select(io, &[YAMUX_PROTOCOL]).await?)?;
        Ok::<_, TransportError>((peer, io, rtt))
    };
    let (peer, io, rtt) = tokio::time::timeout(cfg.handshake_timeout, steps)
        .await
        .map_err(|_| TransportError::HandshakeTimeout)??;
    Ok(connection(
        YamuxConnection::spawn(io, ::yamux::Mode::Server, params(cfg, yamux, rtt)),
        peer,
        local_addr,
        remote_addr,
        Direction::Inbound,
    ))
}

/// The stream of a negotiation that must be complete (V1 dialers and listeners always are).
fn complete<S>(
    (_, negotiated): (String, multistream::Negotiated<S>),
) -> Result<S, NegotiationError> {
    negotiated
        .into_inner()
        .map_err(|_| NegotiationError::InvalidMessage)
}

/// The Noise layer's buffers per connection: a decrypted and an encrypted frame each way.
const NOISE_BUFFERS: u64 = 4 * 65_536;

fn params(cfg: &UpgradeConfig, config: yamux::Config, rtt: Duration) -> YamuxParams {
    YamuxParams {
        config,
        max_inbound_pending: cfg.max_inbound_streams_pending,
        close_timeout: cfg.close_timeout,
        rtt,
        receive_buffer: (cfg.yamux.max_connection_receive_window as u64)
            .saturating_add(NOISE_BUFFERS),
    }
}

fn connection(
    inner: YamuxConnection,
    peer: PeerId,
    local_addr: Multiaddr,
    remote_addr: Multiaddr,
    direction: Direction,
) -> Connection {
    Connection {
        inner: ConnInner::Yamux(inner),
        peer,
        remote_addr,
        local_addr,
        direction,
    }
}
