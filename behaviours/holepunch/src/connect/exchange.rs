//! The connector's exchanges off the swarm task: the `HELLO`/`READY` messages on the spray
//! stream, the sprayer's mappings and the prober's probes, and the address helpers they use.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::AsyncWriteExt;
use meshwire_swarm::toolkit::{read_frame, write_frame, FrameError, Timeout};
use meshwire_swarm::Stream;
use meshwire_transport::quic::QuicSockets;
use multiaddr::{Multiaddr, Protocol};
use tracing::debug;

use super::spray::{is_probe, probe_payload, ProbeSchedule, SprayConfig};
use super::wire::{self, DecodeError, Hello, Message, MAX_MESSAGE_SIZE};

#[derive(Debug, thiserror::Error)]
pub(super) enum ExchangeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("stream closed before {0}")]
    Closed(&'static str),
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

impl From<Timeout> for ExchangeError {
    fn from(t: Timeout) -> Self {
        ExchangeError::Frame(FrameError::Timeout(t))
    }
}

/// What a task of a session returns.
pub(super) enum TaskDone {
    /// The `HELLO` exchange: the stream (for the spray) and the remote's `HELLO`.
    Hello(Box<(Stream, Hello)>),
    /// The sprayer: the socket a probe reached and the probe's source, or no hit.
    Sprayed(Option<(std::net::UdpSocket, SocketAddr)>),
    /// The prober: probes sent.
    Probed(u32),
    /// The answerer's DCUtR deadline passed.
    Deadline,
}

pub(super) async fn read_message(
    stream: &mut Stream,
    what: &'static str,
) -> Result<Message, ExchangeError> {
    let frame = read_frame(stream, MAX_MESSAGE_SIZE)
        .await?
        .ok_or(ExchangeError::Closed(what))?;
    Ok(wire::decode(&frame)?)
}

pub(super) async fn read_hello(stream: &mut Stream) -> Result<Hello, ExchangeError> {
    match read_message(stream, "HELLO").await? {
        Message::Hello(h) => Ok(h),
        Message::Ready => Err(ExchangeError::Unexpected("READY")),
    }
}

/// The opener: our `HELLO`, then theirs.
pub(super) async fn open_hello(mut stream: Stream, ours: Hello) -> Result<TaskDone, ExchangeError> {
    write_frame(&mut stream, &wire::encode(&Message::Hello(ours))).await?;
    let theirs = read_hello(&mut stream).await?;
    Ok(TaskDone::Hello(Box::new((stream, theirs))))
}

/// The answerer: their `HELLO`, then ours with their nonce and the numbers agreed.
pub(super) async fn answer_hello(
    mut stream: Stream,
    mut ours: Hello,
    limits: SprayConfig,
) -> Result<TaskDone, ExchangeError> {
    let theirs = read_hello(&mut stream).await?;
    ours.nonce = theirs.nonce;
    ours.params = limits.agree(&theirs.params).params();
    write_frame(&mut stream, &wire::encode(&Message::Hello(ours))).await?;
    Ok(TaskDone::Hello(Box::new((stream, theirs))))
}

/// The sprayer: `sockets` mappings towards `target`, `READY`, then the first socket a
/// probe of `nonce` reaches, within `window` (or `stop`).
pub(super) async fn spray(
    mut stream: Stream,
    config: SprayConfig,
    nonce: u64,
    target: SocketAddr,
    stop: oneshot::Receiver<()>,
) -> Result<TaskDone, ExchangeError> {
    let payload = probe_payload(nonce);
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let mut sockets = Vec::with_capacity(usize::from(config.sockets));
    for _ in 0..config.sockets {
        let s = tokio::net::UdpSocket::bind(bind).await?;
        // The datagram only opens the mapping; the remote's NAT drops it.
        if let Err(e) = s.send_to(&payload, target).await {
            debug!(error = %e, "spray: a mapping's datagram failed");
        }
        sockets.push(s);
    }
    write_frame(&mut stream, &wire::encode(&Message::Ready)).await?;
    let _ = stream.close().await;
    let wait = futures::future::poll_fn(|cx| {
        let mut buf = [0u8; 32];
        for (i, s) in sockets.iter().enumerate() {
            loop {
                let mut rb = tokio::io::ReadBuf::new(&mut buf);
                match s.poll_recv_from(cx, &mut rb) {
                    Poll::Ready(Ok(from)) => {
                        if from.ip() == target.ip() && is_probe(rb.filled(), nonce) {
                            return Poll::Ready(Some((i, from)));
                        }
                    }
                    // ICMP errors surface as receive errors; the socket stays usable.
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => break,
                }
            }
        }
        Poll::Pending
    });
    let hit = tokio::select! {
        hit = wait => hit,
        _ = tokio::time::sleep(config.window) => None,
        _ = stop => None,
    };
    match hit {
        Some((i, from)) => {
            let socket = sockets.swap_remove(i).into_std()?;
            Ok(TaskDone::Sprayed(Some((socket, from))))
        }
        None => Ok(TaskDone::Sprayed(None)),
    }
}

/// The prober: waits for `READY`, sends the schedule's probes to `ip` from our listening
/// socket, then waits out the window (or `stop`: the direct connection is there).
pub(super) async fn probe(
    mut stream: Stream,
    config: SprayConfig,
    nonce: u64,
    ip: IpAddr,
    sockets: QuicSockets,
    stop: oneshot::Receiver<()>,
    ready_timeout: Duration,
) -> Result<TaskDone, ExchangeError> {
    let ready = tokio::time::timeout(ready_timeout, read_message(&mut stream, "READY"))
        .await
        .map_err(|_| ExchangeError::Closed("READY (timed out)"))??;
    if ready != Message::Ready {
        return Err(ExchangeError::Unexpected("HELLO"));
    }
    let payload = probe_payload(nonce);
    let start = Instant::now();
    let end = tokio::time::Instant::now() + config.window;
    let mut schedule = ProbeSchedule::new(&config, nonce ^ random_u64(), start);
    let mut stop = stop;
    loop {
        while let Some(port) = schedule.poll_transmit(Instant::now()) {
            if let Err(e) = sockets.send_from_listener(SocketAddr::new(ip, port), &payload) {
                debug!(error = %e, port, "spray: probe not sent");
            }
        }
        let Some(next) = schedule.poll_timeout() else {
            break;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = &mut stop => return Ok(TaskDone::Probed(schedule.sent())),
        }
    }
    tokio::select! {
        _ = tokio::time::sleep_until(end) => {}
        _ = stop => {}
    }
    Ok(TaskDone::Probed(schedule.sent()))
}

pub(super) fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The IP and UDP port of a non-relayed address.
pub(super) fn socket_addr(a: &Multiaddr) -> Option<SocketAddr> {
    let mut it = a.iter();
    let ip = match it.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    match it.next()? {
        Protocol::Udp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// Whether `ip` can be another network's way to us (not private, loopback, link-local or
/// unspecified).
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s & 0xfe00) == 0xfc00
                || (s & 0xffc0) == 0xfe80)
        }
    }
}
