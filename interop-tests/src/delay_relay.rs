//! A user-space UDP forwarder that adds a fixed delay each way: round trips made visible on
//! loopback, without netem (which this kernel lacks).
//!
//! [`DelayRelay::start`] binds a socket on the loopback (the address clients dial instead of
//! the server's); every client address gets its own upstream socket towards the server, so
//! the server sees one distinct peer per client, as through a NAT. Each datagram is
//! forwarded `one_way` after it arrived, in arrival order (a constant delay keeps order), so
//! a round trip through the relay takes `2 × one_way` plus the loopback's few microseconds.
//!
//! The relay counts what it forwards ([`DelayRelay::counts`]) and keeps the first datagrams
//! since the last [`DelayRelay::reset`] with their sizes and times ([`DelayRelay::log`]):
//! enough to see a handshake's flights, and whether one of them waited a round trip.
//!
//! ```
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//! use interop_tests::delay_relay::DelayRelay;
//!
//! let server = UdpSocket::bind("127.0.0.1:0").unwrap();
//! let relay = DelayRelay::start(server.local_addr().unwrap(), Duration::from_millis(5)).unwrap();
//! let client = UdpSocket::bind("127.0.0.1:0").unwrap();
//! let t0 = Instant::now();
//! client.send_to(b"ping", relay.local_addr()).unwrap();
//! let mut buf = [0u8; 16];
//! let (n, from) = server.recv_from(&mut buf).unwrap();
//! server.send_to(&buf[..n], from).unwrap();
//! client.recv_from(&mut buf).unwrap();
//! assert!(t0.elapsed() >= Duration::from_millis(10));
//! assert_eq!(relay.counts().to_server.datagrams, 1);
//! ```

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest datagram forwarded (bigger ones are truncated by the receive buffer; QUIC sends
/// at most 1,500-byte datagrams on loopback without GSO coalescing, and 64 KiB covers GSO).
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams kept by the log between resets.
const LOG_LEN: usize = 256;
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Which way a datagram went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// From a client to the server.
    ToServer,
    /// From the server back to a client.
    ToClient,
}

/// Datagrams and bytes forwarded one way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WayCount {
    /// Datagrams forwarded.
    pub datagrams: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// What the relay forwarded since it started or was last [reset](DelayRelay::reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Client → server.
    pub to_server: WayCount,
    /// Server → client.
    pub to_client: WayCount,
}

/// One datagram the relay received, as [`DelayRelay::log`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// When it arrived, since the last reset (or the start).
    pub at: Duration,
    /// Its direction.
    pub way: Way,
    /// Its size in bytes.
    pub len: usize,
}

struct Pending {
    due: Instant,
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    data: Vec<u8>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    counts: Counts,
    log: Vec<Datagram>,
    since: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
    one_way: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `data` for sending on `socket` (to `to`, or its connected peer) after the delay.
    fn push(&self, way: Way, socket: &Arc<UdpSocket>, to: Option<SocketAddr>, data: &[u8]) {
        let now = Instant::now();
        let mut st = self.lock();
        let count = match way {
            Way::ToServer => &mut st.counts.to_server,
            Way::ToClient => &mut st.counts.to_client,
        };
        count.datagrams += 1;
        count.bytes += data.len() as u64;
        let since = *st.since.get_or_insert(now);
        if st.log.len() < LOG_LEN {
            st.log.push(Datagram {
                at: now.saturating_duration_since(since),
                way,
                len: data.len(),
            });
        }
        st.queue.push_back(Pending {
            due: now + self.one_way,
            socket: Arc::clone(socket),
            to,
            data: data.to_vec(),
        });
        drop(st);
        self.wake.notify_one();
    }
}

/// The delaying UDP forwarder. See the [module docs](self). Stops when dropped.
pub struct DelayRelay {
    local: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayRelay {
    /// Starts forwarding datagrams sent to [`DelayRelay::local_addr`] (127.0.0.1, a free
    /// port) to `server`, and the server's answers back, each `one_way` late.
    ///
    /// # Errors
    ///
    /// The relay's socket cannot be bound or its threads started.
    pub fn start(server: SocketAddr, one_way: Duration) -> io::Result<DelayRelay> {
        let front = Arc::new(UdpSocket::bind(("127.0.0.1", 0))?);
        front.set_read_timeout(Some(POLL))?;
        let local = front.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            one_way,
        });
        let sender = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("delay-relay send".into())
                .spawn(move || send_loop(&shared))?
        };
        let receiver = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("delay-relay front".into())
                .spawn(move || front_loop(&shared, &front, server))?
        };
        Ok(DelayRelay {
            local,
            shared,
            threads: vec![sender, receiver],
        })
    }

    /// The address to send to instead of the server's.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The delay added each way.
    pub fn one_way(&self) -> Duration {
        self.shared.one_way
    }

    /// What was forwarded since the start or the last reset.
    pub fn counts(&self) -> Counts {
        self.shared.lock().counts
    }

    /// The first datagrams (up to 256) received since the start or the last reset.
    pub fn log(&self) -> Vec<Datagram> {
        self.shared.lock().log.clone()
    }

    /// Zeroes the counts and empties the log; the log's times count from the next datagram.
    pub fn reset(&self) {
        let mut st = self.shared.lock();
        st.counts = Counts::default();
        st.log.clear();
        st.since = None;
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends every queued datagram when it is due.
fn send_loop(shared: &Shared) {
    let mut st = shared.lock();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match st.queue.front() {
            Some(p) if p.due <= now => {
                if let Some(p) = st.queue.pop_front() {
                    drop(st);
                    // A datagram the kernel refuses is lost, as on a real path.
                    let _ = match p.to {
                        Some(to) => p.socket.send_to(&p.data, to),
                        None => p.socket.send(&p.data),
                    };
                    st = shared.lock();
                }
            }
            Some(p) => {
                let wait = p.due - now;
                st = shared
                    .wake
                    .wait_timeout(st, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            None => {
                st = shared
                    .wake
                    .wait_timeout(st, POLL)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
    }
}

/// Receives from clients; starts one upstream socket (and its receiving thread) per client.
fn front_loop(shared: &Arc<Shared>, front: &Arc<UdpSocket>, server: SocketAddr) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut threads = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, client) = match front.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let up = match upstreams.get(&client) {
            Some(up) => Arc::clone(up),
            None => {
                let Ok(up) = upstream_socket(server) else {
                    continue;
                };
                let up = Arc::new(up);
                let (s, u, f) = (Arc::clone(shared), Arc::clone(&up), Arc::clone(front));
                if let Ok(t) = std::thread::Builder::new()
                    .name("delay-relay back".into())
                    .spawn(move || back_loop(&s, &u, &f, client))
                {
                    threads.push(t);
                }
                upstreams.insert(client, Arc::clone(&up));
                up
            }
        };
        shared.push(Way::ToServer, &up, None, &buf[..n]);
    }
    for t in threads {
        let _ = t.join();
    }
}

fn upstream_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let up = UdpSocket::bind(("127.0.0.1", 0))?;
    up.connect(server)?;
    up.set_read_timeout(Some(POLL))?;
    Ok(up)
}

/// Receives the server's datagrams for one client.
fn back_loop(shared: &Shared, up: &Arc<UdpSocket>, front: &Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stop.load(Ordering::Relaxed) {
        if let Ok(n) = up.recv(&mut buf) {
            shared.push(Way::ToClient, front, Some(client), &buf[..n]);
        }
    }
}
