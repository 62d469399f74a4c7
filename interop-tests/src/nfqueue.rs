//! Delaying packets in user space with netfilter's NFQUEUE, over raw netlink (the kernel
//! here has `nfnetlink_queue` but no netem): an nftables `queue num N` rule hands each
//! packet to a netlink socket bound to queue `N`, and the packet goes on only when the
//! socket's owner gives its verdict. [`Delayer`] gives `NF_ACCEPT` a fixed time after each
//! packet arrived, in arrival order (a constant delay keeps order), from one thread.
//!
//! The netlink socket belongs to the network namespace of the thread that opened it, so a
//! `Delayer` is started on a thread inside the namespace whose rules queue the packets.
//!
//! Wire format (linux/netfilter/nfnetlink_queue.h): every message is an `nlmsghdr`, a
//! `nfgenmsg` (family, version 0, queue number big-endian) and netlink attributes. Packets
//! come as `NFQNL_MSG_PACKET` with an `NFQA_PACKET_HDR` (packet id, big-endian); verdicts go
//! as `NFQNL_MSG_VERDICT` with an `NFQA_VERDICT_HDR` (verdict, id). Only metadata is copied
//! to user space (`NFQNL_COPY_META`), never payloads.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
    SockFlag, SockProtocol, SockType,
};

const AF_INET: u16 = 2;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// Packets the kernel holds for one queue awaiting verdicts; beyond it, it drops them (a
/// full router queue). At 50 ms this is 200,000 packets/s.
const QUEUE_MAXLEN: u32 = 10_000;
/// The socket's receive buffer: packet notices waiting to be read.
const RCVBUF: usize = 4 << 20;

/// The delaying thread for one queue. Stops (and lets the kernel drop what it still holds
/// for the queue once the socket closes) when dropped; remove the nftables rule first.
#[derive(Debug)]
pub(crate) struct Delayer {
    stop: Arc<AtomicBool>,
    delayed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Delayer {
    /// Binds queue `queue` in the current thread's network namespace and starts the thread
    /// accepting each packet `delay` after it arrived.
    pub(crate) fn start(queue: u16, delay: Duration) -> io::Result<Delayer> {
        let socket = Socket::bind(queue)?;
        let stop = Arc::new(AtomicBool::new(false));
        let delayed = Arc::new(AtomicU64::new(0));
        let (s, d) = (Arc::clone(&stop), Arc::clone(&delayed));
        let thread = std::thread::Builder::new()
            .name(format!("nfqueue {queue}"))
            .spawn(move || run(&socket, queue, delay, &s, &d))?;
        Ok(Delayer {
            stop,
            delayed,
            thread: Some(thread),
        })
    }

    /// Packets given their verdict so far.
    pub(crate) fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often the thread looks at the stop flag when nothing is due.
const POLL: Duration = Duration::from_millis(20);

/// Raises the calling thread to real-time priority (SCHED_FIFO 50) with `chrt`, so a loaded
/// machine does not stretch the delay by its scheduling latency; without `chrt` or the right
/// to use it, the thread runs at normal priority.
fn raise_priority() {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()));
    let Some(tid) = tid else { return };
    let raised = std::process::Command::new("chrt")
        .args(["-f", "-p", "50", &tid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !raised {
        tracing::debug!("nfqueue: cannot raise the thread's priority; delays may stretch");
    }
}

fn run(socket: &Socket, queue: u16, delay: Duration, stop: &AtomicBool, delayed: &AtomicU64) {
    raise_priority();
    let mut held: std::collections::VecDeque<(Instant, u32)> = Default::default();
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(&(due, id)) = held.front() {
            if due > now {
                break;
            }
            held.pop_front();
            if let Err(e) = socket.verdict(queue, id) {
                tracing::debug!(queue, id, error = %e, "nfqueue verdict failed");
            }
            delayed.fetch_add(1, Ordering::Relaxed);
        }
        let wait = held.front().map_or(POLL, |&(due, _)| {
            due.saturating_duration_since(now).min(POLL)
        });
        if !socket.readable(wait) {
            continue;
        }
        // Read everything pending before sleeping again.
        loop {
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ENOBUFS: notices were lost (their packets are dropped by the kernel).
                    tracing::debug!(queue, error = %e, "nfqueue receive failed");
                    break;
                }
            };
            let at = Instant::now();
            for id in packet_ids(&buf[..n]) {
                held.push_back((at + delay, id));
            }
        }
    }
}

/// The packet ids of the `NFQNL_MSG_PACKET` messages in one datagram from the kernel.
/// Anything malformed ends the walk (the kernel is trusted, but a bad length must not
/// loop or index out of bounds).
fn packet_ids(mut data: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            let mut attrs = &data[NLMSG_HDRLEN..len];
            if attrs.len() >= NFGENMSG_LEN {
                attrs = &attrs[NFGENMSG_LEN..];
                while attrs.len() >= 4 {
                    let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                    let atype = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                    if alen < 4 || alen > attrs.len() {
                        break;
                    }
                    if atype == NFQA_PACKET_HDR && alen >= 8 {
                        ids.push(u32::from_be_bytes([attrs[4], attrs[5], attrs[6], attrs[7]]));
                    }
                    attrs = &attrs[align(alen).min(attrs.len())..];
                }
            }
        }
        data = &data[align(len).min(data.len())..];
    }
    ids
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// A `NETLINK_NETFILTER` socket bound to one queue.
struct Socket {
    fd: OwnedFd,
}

fn os(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Socket {
    fn bind(queue: u16) -> io::Result<Socket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(os)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(os)?;
        // A smaller buffer than asked (without CAP_NET_ADMIN) is acceptable.
        if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF);
        }
        let socket = Socket { fd };
        // Bind the queue (for IPv4), then ask for metadata only and a longer queue.
        let mut cmd = [0u8; 4];
        cmd[0] = NFQNL_CFG_CMD_BIND;
        cmd[2..4].copy_from_slice(&AF_INET.to_be_bytes());
        socket.request(NFQNL_MSG_CONFIG, queue, &[(NFQA_CFG_CMD, &cmd)])?;
        let mut params = [0u8; 5];
        params[0..4].copy_from_slice(&0u32.to_be_bytes());
        params[4] = NFQNL_COPY_META;
        socket.request(
            NFQNL_MSG_CONFIG,
            queue,
            &[
                (NFQA_CFG_PARAMS, &params),
                (NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes()),
            ],
        )?;
        Ok(socket)
    }

    /// One netfilter-queue message: `nlmsghdr`, `nfgenmsg` (family unspecified, version 0,
    /// the queue number big-endian) and the attributes.
    fn message(kind: u16, flags: u16, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&queue.to_be_bytes());
        for (t, v) in attrs {
            let alen = 4 + v.len();
            m.extend_from_slice(&(alen as u16).to_ne_bytes());
            m.extend_from_slice(&t.to_ne_bytes());
            m.extend_from_slice(v);
            m.resize(align(m.len()), 0);
        }
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
        m[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        m
    }

    /// Sends a configuration request and waits for the kernel's acknowledgement.
    fn request(&self, kind: u16, queue: u16, attrs: &[(u16, &[u8])]) -> io::Result<()> {
        self.send(&Socket::message(kind, NLM_F_ACK, queue, attrs))?;
        let mut buf = [0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from nfnetlink_queue",
                ));
            }
            if !self.readable(left) {
                continue;
            }
            let n = match self.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
                let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
        }
    }

    fn verdict(&self, queue: u16, id: u32) -> io::Result<()> {
        let mut hdr = [0u8; 8];
        hdr[0..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
        hdr[4..8].copy_from_slice(&id.to_be_bytes());
        self.send(&Socket::message(
            NFQNL_MSG_VERDICT,
            0,
            queue,
            &[(NFQA_VERDICT_HDR, &hdr)],
        ))
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        sendto(
            self.fd.as_raw_fd(),
            msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map(drop)
        .map_err(os)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(os)
    }

    /// Waits up to `timeout` for something to read.
    fn readable(&self, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        // Round up so a wait of a few microseconds does not spin.
        let ms = timeout.as_micros().div_ceil(1000).min(60_000) as u16;
        matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_are_read_and_bad_lengths_end_the_walk() {
        let hdr = [0, 0, 0, 42, 0x08, 0x00, 1];
        let msg = Socket::message(NFQNL_MSG_PACKET, 0, 0, &[(NFQA_PACKET_HDR, &hdr)]);
        let mut two = msg.clone();
        two.extend_from_slice(&msg);
        assert_eq!(packet_ids(&two), vec![42, 42]);
        let mut bad = msg.clone();
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(packet_ids(&bad).is_empty());
        assert!(packet_ids(&msg[..10]).is_empty());
    }
}
